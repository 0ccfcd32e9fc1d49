"""TaskiqRunLauncher with Dagster's run monitoring: run and step slots share one worker without a
deadlock, routing of runs by run tag, the start timeout naming the queue, worker health, resuming a
run whose worker died, and terminating a run that run monitoring could resume.

Each class has its own `dagster dev` (and DAGSTER_HOME), because the dagster.yaml differs."""

import os
import signal
from collections import Counter

import pytest
from dagster import DagsterRunStatus
from dagster._core.launcher import WorkerStatus
from dagster._serdes import serialize_value

from dagster_taskiq_go.dev import step_workers
from dagster_taskiq_go.tags import RUN_QUEUE_TAG, TASK_ID_TAG

from .stack import (
    RESUMABLE_MONITORING,
    STEP_START,
    Worker,
    launcher_stack,
    step_events,
    task_record,
    wait_for,
    wait_for_run,
)

ROUTE = "dagster-taskiq/queue"
HEARTBEAT = ("--heartbeat-interval", "1")
pytestmark = pytest.mark.e2e


def event_log_text(instance, run_id: str) -> str:
    return "\n".join(serialize_value(r.event_log_entry) for r in instance.get_records_for_run(run_id).records)


def task_started(worker: Worker, task_id: str) -> bool:
    return any("task started" in line and task_id in line for line in worker.log().splitlines())


@pytest.fixture(scope="class")
def plain(moto_endpoint, tmp_path_factory):
    """No run monitoring."""
    workers = {
        # One step slot and one run slot: a run holds its run slot while its steps use the step slot.
        "solo": (["dagster"], {"concurrency": 1, "extra": ("--run-concurrency", "1", *HEARTBEAT)}),
        "special": (["special"], {"concurrency": 1, "extra": HEARTBEAT}),
    }
    with launcher_stack(moto_endpoint, tmp_path_factory, "lnomon", ["dagster", "special", "doomed"], workers) as stack:
        yield stack


@pytest.fixture(scope="class")
def start_timeout(moto_endpoint, tmp_path_factory):
    """Run monitoring with a 10 s start timeout; no worker at all."""
    monitoring = {"enabled": True, "start_timeout_seconds": 10, "poll_interval_seconds": 2}
    with launcher_stack(moto_endpoint, tmp_path_factory, "lstart", ["dagster", "lonely"], {}, monitoring) as stack:
        yield stack


@pytest.fixture(scope="class")
def resumable(moto_endpoint, tmp_path_factory):
    """Run monitoring with one resume attempt; runs go to queue "runs", their steps to "steps"."""
    workers = {
        "steps": (["steps"], {"concurrency": 2, "extra": (*HEARTBEAT, "--run-concurrency", "0")}),
        "runner1": (["runs"], {"concurrency": 1, "extra": HEARTBEAT}),
    }
    with launcher_stack(
        moto_endpoint, tmp_path_factory, "lresume", ["dagster", "runs", "steps"], workers, RESUMABLE_MONITORING
    ) as stack:
        yield stack


class TestWithoutMonitoring:
    """Slots, routing and worker health."""

    @pytest.fixture
    def stack(self, plain):
        return plain

    def test_one_slot_of_each_kind_runs_three_runs_without_deadlock(self, stack):
        run_ids = [stack.submit("two_steps") for _ in range(3)]
        for run_id in run_ids:
            run = wait_for_run(stack.instance, run_id)
            assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run.run_id)
            ran_on = step_workers(stack.instance, run_id)
            assert {step: worker.rsplit("-", 1)[0] for step, worker in ran_on.items()} == {
                "first": "solo",
                "second": "solo",
            }
            record = stack.finished_record(run.tags[TASK_ID_TAG])
            assert record["state"] == "SUCCESS" and record["worker_id"].startswith("solo-"), record

    def test_run_tag_routes_the_run(self, stack):
        special = stack.submit("hello", tags={ROUTE: "special"})
        default = stack.submit("hello")
        for run_id, queue, worker in ((special, "special", "special"), (default, "dagster", "solo")):
            run = wait_for_run(stack.instance, run_id)
            assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run.run_id)
            assert run.tags[RUN_QUEUE_TAG] == queue
            record = stack.finished_record(run.tags[TASK_ID_TAG])
            assert record["queue"] == queue and record["state"] == "SUCCESS", record
            assert record["worker_id"].startswith(f"{worker}-"), record

    def test_worker_health_running_lost_and_success(self, stack):
        launcher = stack.instance.run_launcher

        def health(run_id):
            return launcher.check_run_worker_health(stack.instance.get_run_by_id(run_id))

        doomed = Worker("doomed", ["doomed"], str(stack.tmp), concurrency=1, extra=HEARTBEAT)
        stack.workers["doomed"] = doomed
        run_id = stack.submit("napping", tags={ROUTE: "doomed"})
        try:
            task_id = stack.run_task(run_id)
            record = stack.running(run_id, task_id)
            wait_for(
                lambda: stack.instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED, 120, "run STARTED"
            )
            result = health(run_id)
            assert result.status == WorkerStatus.RUNNING, result
            assert result.run_worker_id == record["worker_id"] and result.run_worker_id.startswith("doomed-")

            os.kill(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait()
            # The lease (three heartbeats of 1 s) goes stale: the worker is lost.
            result = wait_for(
                lambda: (r := health(run_id)).status != WorkerStatus.RUNNING and r, 60, "the lease to go stale"
            )
            assert result.status == WorkerStatus.FAILED, result
            assert "worker lost" in result.msg and record["worker_id"] in result.msg, result.msg
            wait_for(
                lambda: not os.path.exists(f"/proc/{record['pid']}"), 30, "the run's process to die with its worker"
            )
        finally:
            run = stack.instance.get_run_by_id(run_id)
            if not run.is_finished:
                stack.instance.report_run_failed(run, "test: its worker was killed on purpose")

        ok = stack.submit("hello")
        run = wait_for_run(stack.instance, ok)
        assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run.run_id)
        stack.finished_record(run.tags[TASK_ID_TAG])
        result = health(ok)
        assert result.status == WorkerStatus.SUCCESS, result


class TestStartTimeout:
    @pytest.fixture
    def stack(self, start_timeout):
        return start_timeout

    def test_run_nobody_takes_fails_naming_its_queue_and_never_runs(self, stack):
        run_id = stack.submit("hello", tags={ROUTE: "lonely"})
        run = wait_for_run(stack.instance, run_id, timeout=180)
        assert run.status == DagsterRunStatus.FAILURE
        task_id = run.tags[TASK_ID_TAG]
        text = event_log_text(stack.instance, run_id)
        assert "seconds to start" in text, text[-3000:]
        assert f"task {task_id} in queue lonely" in text and "live workers listening: none" in text, text[-3000:]
        assert "no worker will start it" in text, text[-3000:]

        # The run is over: a worker that starts on its queue afterwards must not run it.
        late = Worker("late", ["lonely"], str(stack.tmp), concurrency=1)
        stack.workers["late"] = late
        wait_for(lambda: "canceled before it started" in late.log(), 60, "the late worker to drop the task")
        assert not task_started(late, task_id), late.log()
        assert task_record(stack.config, task_id)["state"] == "CANCELED"
        assert stack.instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


class TestResume:
    """A run whose worker dies is resumed; a run that could be resumed can still be terminated."""

    @pytest.fixture
    def stack(self, resumable):
        return resumable

    def test_run_resumes_after_its_worker_is_killed(self, stack):
        run_id = stack.submit("resumable", tags={ROUTE: "runs"})
        run_task = stack.run_task(run_id)
        assert run_task == f"{run_id}/execute"
        step = stack.running(run_id, f"{run_id}/slow_first/1")
        assert step["worker_id"].startswith("steps-"), step
        stack.op_started(run_id, "slow_first")
        runner_id = stack.running(run_id, run_task)["worker_id"]
        [(name, runner)] = [(n, w) for n, w in stack.workers.items() if runner_id.startswith(f"{n}-")]
        os.kill(runner.proc.pid, signal.SIGKILL)
        runner.proc.wait()
        assert task_record(stack.config, step["task_id"])["state"] == "RUNNING", "the run's worker died mid-op"
        del stack.workers[name]
        stack.workers["runner2"] = Worker("runner2", ["runs"], str(stack.tmp), concurrency=1, extra=HEARTBEAT)

        run = wait_for_run(stack.instance, run_id)
        assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run.run_id)
        assert run.tags[TASK_ID_TAG] == f"{run_id}/resume/1"
        resumed = stack.finished_record(f"{run_id}/resume/1")
        assert resumed["kind"] == "resume_run" and resumed["state"] == "SUCCESS", resumed
        assert resumed["worker_id"].startswith("runner2-"), resumed
        assert task_record(stack.config, run_task)["state"] == "FAILED"

        starts = Counter(e.dagster_event.step_key for e in step_events(stack.instance, run_id, STEP_START))
        assert starts == {"slow_first": 1, "then_second": 1}, starts
        ran = Counter(line.split()[0] for line in (stack.tmp / "ran").read_text().splitlines())
        assert ran == {"slow_first": 1, "then_second": 1}, ran
        assert task_record(stack.config, f"{run_id}/slow_first/2") is None, "the in-flight op was not relaunched"

    def test_terminate_ends_the_run_and_its_step(self, stack):
        run_id = stack.submit("sleepy_step", tags={ROUTE: "runs"})
        step = stack.running(run_id, f"{run_id}/sleeps/1")
        stack.op_started(run_id, "sleeps")
        stack.dev.terminate(run_id)
        run = wait_for_run(stack.instance, run_id, timeout=120)
        assert run.status == DagsterRunStatus.CANCELED, stack.errors(run_id)
        wait_for(lambda: not os.path.exists(f"/proc/{step['pid']}"), 60, "the step's process to be gone")
        assert stack.finished_record(f"{run_id}/sleeps/1")["state"] == "CANCELED"
