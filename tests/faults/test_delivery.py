"""At-least-once delivery: duplicate step and run messages, a step outliving its queue's visibility
timeout, and step args too large for SQS, against real workers, `dagster dev` and moto."""

import os
from collections import Counter

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from ..e2e.stack import (
    JOBS_DIR,
    Worker,
    aws_client,
    deliver_twice,
    launcher_stack,
    shorten_visibility,
    step_events,
    wait_for,
    wait_for_run,
)

FAULT_JOBS = os.path.join(JOBS_DIR, "fault_jobs.py")
ROUTE = {"dagster-taskiq/queue": "runs"}
HEARTBEAT = ("--heartbeat-interval", "1")


@pytest.fixture(scope="module")
def stack(moto_endpoint, tmp_path_factory):
    """TaskiqRunLauncher; runs go to queue "runs", steps to "steps"; each test starts its workers."""
    with launcher_stack(
        moto_endpoint, tmp_path_factory, "deliv", ["dagster", "runs", "steps"], {}, jobs=FAULT_JOBS
    ) as s:
        yield s


def start(stack, name: str, queues: list[str], *extra: str, concurrency: int = 1) -> Worker:
    if name in stack.workers:
        stack.workers.pop(name).stop()
    stack.workers[name] = Worker(name, queues, str(stack.tmp), concurrency=concurrency, extra=(*HEARTBEAT, *extra))
    return stack.workers[name]


def runs_of(stack) -> Counter:
    path = stack.tmp / "ran"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter((line.split()[0], line.split()[1]) for line in lines)


def starts(worker: Worker, task_id: str) -> int:
    return sum(1 for line in worker.log().splitlines() if "task started" in line and task_id in line)


def slow_run(stack, seconds: float) -> str:
    return stack.submit("one_slow", run_config={"ops": {"slow": {"config": {"seconds": seconds}}}}, tags=ROUTE)


def test_duplicate_run_message_runs_once(stack, fault_report):
    before = runs_of(stack)
    run_id = slow_run(stack, 1)
    # No run worker yet: the run's message waits in the queue, where it is delivered twice.
    deliver_twice(os.environ, "runs-runs")
    runner = start(stack, "runner", ["runs"])
    start(stack, "steps", ["steps"], "--run-concurrency", "0")
    run = wait_for_run(stack.instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
    task_id = f"{run_id}/execute"
    wait_for(lambda: "duplicate delivery" in runner.log(), 60, "the second copy to be refused")
    dropped = [line for line in runner.log().splitlines() if "duplicate delivery" in line]
    assert any(task_id in line for line in dropped), dropped
    assert starts(runner, task_id) == 1, runner.log()[-3000:]
    assert runs_of(stack) - before == {("start", "slow"): 1, ("end", "slow"): 1, ("end", "then_quick"): 1}
    fault_report(
        "a run's message delivered twice",
        "run executed once; the second copy deleted unrun",
        f"run SUCCESS, started {starts(runner, task_id)}x; second copy: 'duplicate delivery', deleted unrun",
    )


def test_duplicate_step_message_runs_once(stack, fault_report):
    # No step worker while the step's message waits: it is delivered twice.
    stack.workers.pop("steps").stop()
    start(stack, "runner", ["runs"])
    before = runs_of(stack)
    run_id = slow_run(stack, 1)
    deliver_twice(os.environ, "steps")
    # One slot: the copies are taken one after the other (moto's conditional put is not atomic under
    # concurrency, unlike S3's, so simultaneous claims would test moto rather than the worker).
    steps = start(stack, "steps", ["steps"], "--run-concurrency", "0")
    run = wait_for_run(stack.instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
    task_id = f"{run_id}/slow/1"
    wait_for(lambda: "duplicate delivery" in steps.log(), 60, "the second copy to be refused")
    dropped = [line for line in steps.log().splitlines() if "duplicate delivery" in line]
    assert any(task_id in line for line in dropped), dropped
    assert starts(steps, task_id) == 1, steps.log()[-3000:]
    assert runs_of(stack) - before == {("start", "slow"): 1, ("end", "slow"): 1, ("end", "then_quick"): 1}
    fault_report(
        "a step's message delivered twice",
        "step executed once; the second copy deleted unrun",
        f"step ran {starts(steps, task_id)}x; second copy: 'duplicate delivery', deleted unrun",
    )


def test_step_longer_than_visibility_timeout_runs_once(stack, fault_report):
    shorten_visibility(os.environ, "steps", 3)
    steps = start(stack, "steps", ["steps"], "--run-concurrency", "0", concurrency=2)
    start(stack, "runner", ["runs"])
    before = runs_of(stack)
    run_id = slow_run(stack, 15)
    run = wait_for_run(stack.instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
    task_id = f"{run_id}/slow/1"
    assert starts(steps, task_id) == 1
    assert not any("duplicate delivery" in line and task_id in line for line in steps.log().splitlines())
    assert runs_of(stack) - before == {("start", "slow"): 1, ("end", "slow"): 1, ("end", "then_quick"): 1}
    fault_report(
        "a 15 s step on a queue with a 3 s visibility timeout",
        "the step completes once; no redelivery",
        f"step ran {starts(steps, task_id)}x, 0 redeliveries (message deleted after the claim)",
    )


def test_oversized_step_args_travel_through_s3(stack, fault_report):
    start(stack, "steps", ["steps"], "--run-concurrency", "0")
    start(stack, "runner", ["runs"])
    before = runs_of(stack)
    run_id = stack.submit("offloaded", tags=ROUTE)
    run = wait_for_run(stack.instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
    assert runs_of(stack) - before == {("end", "small"): 1}
    [submitted] = step_events(stack.instance, run_id, DagsterEventType.STEP_WORKER_STARTING)
    metadata = submitted.dagster_event.event_specific_data.metadata
    assert metadata["payload_offloaded"].value is True, metadata

    s3 = aws_client(os.environ, "s3")

    def payloads():
        listed = s3.list_objects_v2(Bucket=os.environ["DAGSTER_TASKIQ_S3_BUCKET"], Prefix="dagster-taskiq/payloads/")
        return [o["Key"] for o in listed.get("Contents", [])]

    wait_for(lambda: not payloads(), 60, "the payload object to be deleted")
    fault_report(
        "step args above payload_threshold_bytes=1024",
        "args go to S3, the step runs, the payload object is deleted",
        "payload_offloaded=True, step SUCCESS, 0 payload objects left",
    )
