"""``TaskiqRunLauncher``: whole runs on dagster-taskiq-go workers, configured in ``dagster.yaml``.

The run's task id and queue are recorded as run tags, so terminate and health work from any process
(webserver, daemon, CLI). Health comes from the S3 task record that the worker keeps leased.
"""

import json
from typing import Any

from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    ResumeRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value
from dagster._time import get_current_timestamp

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.config import core_config_json, core_config_schema
from dagster_taskiq_go.tags import RUN_QUEUE_TAG, TASK_ID_TAG

_STATUS = {
    "QUEUED": WorkerStatus.RUNNING,  # waiting for a run slot is healthy (TaskHealth bounds the wait)
    "RUNNING": WorkerStatus.RUNNING,
    "SUCCESS": WorkerStatus.SUCCESS,
    "FAILED": WorkerStatus.FAILED,
    "CANCELED": WorkerStatus.FAILED,
    "NOT_FOUND": WorkerStatus.NOT_FOUND,
}


class TaskiqRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as an ``execute_run`` task on the workers' run slots."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, **config: Any):
        self._inst_data = inst_data
        self._core = core_config_json(config)  # a bad value fails at instance load, naming the key
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls):
        return core_config_schema()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def _submit(self, run: DagsterRun, kind: str, args, attempt: int = 0) -> dict:
        request = {
            "kind": kind,
            "run_id": run.run_id,
            "attempt": attempt,
            "run_tags": dict(run.tags),
            "args": serialize_value(args),
        }
        result = call_json("Submit", self._core, json.dumps(request))
        self._instance.add_run_tags(run.run_id, {TASK_ID_TAG: result["task_id"], RUN_QUEUE_TAG: result["queue"]})
        self._instance.report_engine_event(
            f"Submitted run to queue {result['queue']}, band {result['band']} (task {result['task_id']}).",
            run,
            cls=self.__class__,
        )
        return result

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        self._submit(run, "execute_run", args)

    @property
    def supports_resume_run(self) -> bool:
        return True

    def resume_run(self, context: ResumeRunContext) -> None:
        run = context.dagster_run
        args = ResumeRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        self._submit(run, "resume_run", args, attempt=context.resume_attempt_number or 1)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        task_id = run.tags.get(TASK_ID_TAG)
        if task_id is None:
            self._instance.report_engine_event("Run has no task id tag: nothing to terminate.", run, cls=self.__class__)
            return False
        self._instance.report_run_canceling(run)
        result = call_json("Cancel", self._core, task_id)
        if result["state"] == "CANCELED":
            # Still queued: the worker that receives it will find the cancel marker and never start it.
            self._instance.report_run_canceled(run, message="Run canceled before a worker started it.")
        else:
            self._instance.report_engine_event(
                f"Asked the worker running task {task_id} to stop the run.", run, cls=self.__class__
            )
        return result["requested"]

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        task_id = run.tags.get(TASK_ID_TAG)
        if task_id is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "Run has no dagster-taskiq/task_id tag.")
        verdict = call_json("TaskHealth", self._core, task_id)
        record = verdict.get("record") or {}
        return CheckRunHealthResult(
            _STATUS[verdict["status"]], verdict.get("reason") or None, run_worker_id=record.get("worker_id")
        )

    def _start_timed_out(self, run: DagsterRun) -> bool:
        """Whether run monitoring is failing this run for taking longer than start_timeout_seconds to
        start (the same test as Dagster's monitor_starting_run)."""
        instance = self._instance
        if run.status != DagsterRunStatus.STARTING or not instance.run_monitoring_enabled:
            return False
        timeout = instance.run_monitoring_start_timeout_seconds
        launch_time = instance.get_run_stats(run.run_id).launch_time
        return timeout > 0 and launch_time is not None and get_current_timestamp() - launch_time >= timeout

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        """Run monitoring calls this just before it ends a run. When it is failing a run that never
        started (start timeout), the run's task is canceled first: otherwise a worker that frees a run
        slot, or starts on the queue, later would still receive and start the run Dagster already failed."""
        queue = run.tags.get(RUN_QUEUE_TAG)
        if queue is None:
            return None
        task_id = run.tags.get(TASK_ID_TAG)
        canceled = ""
        if task_id is not None and self._start_timed_out(run):
            try:
                result = call_json("Cancel", self._core, task_id)
            except Exception as exc:  # the debug info is still worth having
                canceled = f" Could not cancel the run's task, a worker may still start it: {exc}"
            else:
                if result["state"] == "CANCELED":
                    canceled = " The run's task was canceled: no worker will start it."
                elif result["requested"]:
                    canceled = f" A worker just took the run's task; it was asked to stop it ({result['state']})."
        stats = call_json("QueueStats", self._core, queue)
        bands = ", ".join(f"{b['band']}: {b['visible']} visible, {b['in_flight']} in flight" for b in stats["bands"])
        workers = ", ".join(stats["live_workers"]) or "none"
        return (
            f"task {task_id} in queue {queue} ({bands}; dead letters {stats['dead_letters']}); "
            f"live workers listening: {workers}. Run monitoring's start_timeout_seconds must cover the queue wait."
            + canceled
        )
