"""A Dagster job's steps run on SQS workers end to end: runs launched through `dagster dev`'s GraphQL
API, steps executed by two worker processes started from the CLI, results in the event log."""

import os

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from dagster_taskiq_go.dev import step_workers

from .stack import DagsterDev, Worker, create_queues, dagster_home, step_events, transport_env, wait_for_run

JOBS = os.path.join(os.path.dirname(__file__), "..", "jobs", "skeleton.py")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("skeleton")
    home = dagster_home(tmp)
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "skeleton").items():
        patch.setenv(name, value)
    create_queues(os.environ, "dagster")
    workers = [Worker(name, ["dagster"], str(tmp)) for name in ("alpha", "beta")]
    dev = DagsterDev(os.path.abspath(JOBS), home, str(tmp))
    instance = DagsterInstance.from_config(home)
    try:
        yield dev, instance, workers
    finally:
        instance.dispose()
        dev.stop()
        for worker in workers:
            worker.stop()
        patch.undo()


def test_fanout_runs_on_two_workers(stack):
    dev, instance, workers = stack
    run_id = dev.client().submit_job_execution("fanout")
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, [w.log()[-3000:] for w in workers]

    steps = {e.dagster_event.step_key for e in step_events(instance, run_id, DagsterEventType.STEP_SUCCESS)}
    assert steps == {"start", "gather", *(f"branch_{i}" for i in range(10))}
    ran_on = step_workers(instance, run_id)
    assert set(ran_on) == steps, "every op's events name the worker that ran it"
    names = {worker_id.rsplit("-", 1)[0] for worker_id in ran_on.values()}
    assert names == {"alpha", "beta"}, f"each worker ran at least one op: {ran_on}"


def test_failing_op_fails_the_run_with_its_error(stack):
    dev, instance, _ = stack
    run_id = dev.client().submit_job_execution("failing")
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.FAILURE
    failures = step_events(instance, run_id, DagsterEventType.STEP_FAILURE)
    assert [e.dagster_event.step_key for e in failures] == ["explode"]
    error, messages = failures[0].dagster_event.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any("ValueError: boom from op explode" in m for m in messages), messages
