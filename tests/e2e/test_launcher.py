"""TaskiqRunLauncher from dagster.yaml: runs submitted through `dagster dev` (QueuedRunCoordinator and
daemon), and launched by the instance at once (DefaultRunCoordinator), run on a worker; terminate works for queued
and running runs."""

import os
import subprocess
import sys

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.tags import RUN_QUEUE_TAG, TASK_ID_TAG

from .stack import DagsterDev, Worker, create_queues, transport_env, wait_for, wait_for_run, write_launcher_home

JOBS = os.path.join(os.path.dirname(__file__), "..", "jobs", "launcher.py")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launcher")
    home = write_launcher_home(str(tmp / "dagster_home"))
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "launcher").items():
        patch.setenv(name, value)
    config = create_queues(os.environ, "dagster", "idle")
    worker = Worker("runner", ["dagster"], str(tmp), extra=("--heartbeat-interval", "1", "--grace-period", "10"))
    dev = DagsterDev(os.path.abspath(JOBS), home, str(tmp))
    instance = DagsterInstance.from_config(home)
    try:
        yield dev, instance, worker, config, tmp
    finally:
        instance.dispose()
        dev.stop()
        worker.stop()
        patch.undo()


def assert_ran_on_the_worker(instance, worker, config, run_id):
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, worker.log()[-3000:]
    assert run.tags[TASK_ID_TAG] == f"{run_id}/execute"
    assert run.tags[RUN_QUEUE_TAG] == "dagster"
    # The run reports SUCCESS from inside the task; the record follows when the process exits.
    record = wait_for(
        lambda: (r := call_json("TaskStatus", config, run.tags[TASK_ID_TAG]))["state"] != "RUNNING" and r,
        60,
        "the task record to finish",
    )
    assert record["state"] == "SUCCESS" and record["worker_id"].startswith("runner-")


def test_run_runs_on_a_worker(stack):
    dev, instance, worker, config, _ = stack
    assert_ran_on_the_worker(instance, worker, config, dev.client().submit_job_execution("hello"))


def test_run_launched_through_the_instance(stack, tmp_path):
    """`dagster job launch` with the DefaultRunCoordinator: instance.submit_run launches at once."""
    _, _, worker, config, _ = stack
    home = write_launcher_home(str(tmp_path / "dagster_home"), queued=False)
    subprocess.run(
        [sys.executable, "-m", "dagster", "job", "launch", "-f", os.path.abspath(JOBS), "-j", "hello"],
        env=dict(os.environ, DAGSTER_HOME=home),
        check=True,
        timeout=300,
    )
    instance = DagsterInstance.from_config(home)
    try:
        [run] = instance.get_runs()
        assert_ran_on_the_worker(instance, worker, config, run.run_id)
    finally:
        instance.dispose()


def test_terminate_running_run(stack):
    dev, instance, worker, config, _ = stack
    client = dev.client()
    run_id = client.submit_job_execution("sleepy")
    wait_for(lambda: instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED, 120, "run to start")
    task_id = instance.get_run_by_id(run_id).tags[TASK_ID_TAG]
    wait_for(lambda: call_json("TaskStatus", config, task_id)["state"] == "RUNNING", 60, "task RUNNING")
    pid = call_json("TaskStatus", config, task_id)["pid"]
    dev.terminate(run_id)
    run = wait_for_run(instance, run_id, timeout=120)
    assert run.status == DagsterRunStatus.CANCELED
    wait_for(lambda: call_json("TaskStatus", config, task_id)["state"] == "CANCELED", 60, "task CANCELED")
    assert not os.path.exists(f"/proc/{pid}"), "the run's process is gone"


def test_terminate_queued_run_never_starts(stack):
    dev, instance, _, config, tmp = stack
    client = dev.client()
    run_id = client.submit_job_execution("hello", tags={"dagster-taskiq/queue": "idle"})
    wait_for(lambda: TASK_ID_TAG in instance.get_run_by_id(run_id).tags, 120, "run to be submitted")
    # The run waits in SQS, so it is STARTING: terminate it through the run coordinator, as the Python
    # API does (the UI offers only "mark canceled" for STARTING runs, which bypasses the launcher).
    assert instance.run_coordinator.cancel_run(run_id)
    run = wait_for_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.CANCELED
    task_id = run.tags[TASK_ID_TAG]
    assert call_json("TaskStatus", config, task_id)["state"] == "CANCELED"
    # A worker that starts afterwards receives the message and drops it unrun.
    late = Worker("late", ["idle"], str(tmp))
    try:
        wait_for(lambda: "canceled before it started" in late.log(), 60, "the late worker to drop the task")
    finally:
        late.stop()
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED
    assert call_json("TaskStatus", config, task_id)["state"] == "CANCELED"
