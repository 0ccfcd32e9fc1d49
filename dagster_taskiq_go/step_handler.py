"""``TaskiqStepHandler``: Dagster's step delegation over SQS workers.

Steps are submitted as signed SQS messages; their state lives in S3 task records, so health checks
and termination work from any process, including a resumed run worker.
"""

import json
from collections.abc import Iterator
from datetime import datetime, timezone

from dagster import DagsterEvent
from dagster._core.executor.step_delegating import CheckStepHealthResult, StepHandler, StepHandlerContext

from dagster_taskiq_go._pyshim import call_json

# How long a task may have exited 0 before its step's events must have been seen.
RESULT_GRACE_SECONDS = 30

_warned: set[str] = set()


def warn_once(step_context, message: str) -> None:
    """Logs a routing warning (e.g. a dagster-celery/* fallback tag) once per process."""
    if message not in _warned:
        _warned.add(message)
        step_context.log.warning(message)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class TaskiqStepHandler(StepHandler):
    def __init__(self, core_config_json: str):
        super().__init__()
        self._config = core_config_json

    @property
    def name(self) -> str:
        return "TaskiqStepHandler"

    @staticmethod
    def _step_key(ctx: StepHandlerContext) -> str:
        keys = ctx.execute_step_args.step_keys_to_execute
        assert keys is not None and len(keys) == 1, "TaskiqStepHandler launches one step at a time"
        return keys[0]

    @classmethod
    def _attempt(cls, ctx: StepHandlerContext) -> int:
        known_state = ctx.execute_step_args.known_state
        retries = known_state.get_retry_state().get_attempt_count(cls._step_key(ctx)) if known_state else 0
        return retries + 1

    def _task_id(self, ctx: StepHandlerContext) -> str:
        return f"{ctx.execute_step_args.run_id}/{self._step_key(ctx)}/{self._attempt(ctx)}"

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        ctx = step_handler_context
        step_key = self._step_key(ctx)
        args = ctx.execute_step_args
        request = {
            "kind": "execute_step",
            "run_id": args.run_id,
            "step_key": step_key,
            "attempt": self._attempt(ctx),
            "step_tags": dict(ctx.step_tags[step_key]),
            "run_tags": dict(ctx.dagster_run.tags),
            "args": args.get_command_env()[0]["value"],
        }
        result = call_json("Submit", self._config, json.dumps(request))
        step_context = ctx.get_step_context(step_key)
        for warning in result["warnings"] or []:
            warn_once(step_context, warning)
        if result["listeners"] == 0:
            step_context.log.warning(
                f'No live worker listens to queue {result["queue"]}: step "{step_key}" waits until one starts '
                f"(dagster-taskiq-go worker start -q {result['queue']}), or fails after max_queue_wait_seconds."
            )
        yield DagsterEvent.step_worker_starting(
            step_context,
            message=(
                f'Submitted step "{step_key}" to queue {result["queue"]}, band {result["band"]} '
                f"(priority {result['priority']}, task {result['task_id']})."
            ),
            metadata={
                "task_id": result["task_id"],
                "queue": result["queue"],
                "band": result["band"],
                "priority": result["priority"],
                "payload_offloaded": result["payload_offloaded"],
            },
        )

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        task_id = self._task_id(step_handler_context)
        verdict = call_json("TaskHealth", self._config, task_id)
        if not verdict["healthy"]:
            return CheckStepHealthResult.unhealthy(verdict["reason"])
        record = verdict["record"]
        if verdict["status"] == "SUCCESS":
            # Exit 0 proves nothing: verify_step refusals and CANCELING skips exit 0 too. The step's own
            # events arrive before its process exits, so a step still in flight well after that never ran.
            finished = _parse_time(record["finished_at"])
            if (datetime.now(timezone.utc) - finished).total_seconds() > RESULT_GRACE_SECONDS:
                return CheckStepHealthResult.unhealthy(
                    f"Task {task_id} exited 0 on worker {record['worker_id']} without reporting a result "
                    "(it was refused by verify_step, or skipped because the run is canceling)."
                )
        return CheckStepHealthResult.healthy()

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        ctx = step_handler_context
        step_key = self._step_key(ctx)
        task_id = self._task_id(ctx)
        result = call_json("Cancel", self._config, task_id)
        yield DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            message=f'Requested termination of step "{step_key}" (task {task_id}, state {result["state"]}).',
            event_specific_data=None,
        )
