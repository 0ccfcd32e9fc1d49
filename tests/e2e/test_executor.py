"""taskiq_executor on real jobs: routing, priority, Dagster features, stuck steps, bad config and
termination. Runs are launched and terminated through `dagster dev`'s GraphQL API."""

import os

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._serdes import serialize_value

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.dev import step_workers

from .stack import DagsterDev, Worker, create_queues, dagster_home, step_events, transport_env, wait_for, wait_for_run

JOBS = os.path.join(os.path.dirname(__file__), "..", "jobs", "executor_jobs.py")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("executor")
    home = dagster_home(tmp)
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "executor").items():
        patch.setenv(name, value)
    patch.setenv("TASKIQ_TEST_DIR", str(tmp))
    config = create_queues(os.environ, "dagster", "a", "b", "r", "prio", "nobody")
    workers = {
        "main": Worker("main", ["dagster"], str(tmp)),
        "wa": Worker("wa", ["a"], str(tmp), concurrency=1),
        "wb": Worker("wb", ["b", "r"], str(tmp), concurrency=1),
        "wp": Worker("wp", ["prio"], str(tmp), concurrency=1, extra=("--anti-starvation-weight", "0")),
    }
    dev = DagsterDev(os.path.abspath(JOBS), home, str(tmp))
    instance = DagsterInstance.from_config(home)
    try:
        yield dev, instance, workers, config, tmp
    finally:
        instance.dispose()
        dev.stop()
        for worker in workers.values():
            worker.stop()
        patch.undo()


def run_job(stack, job, **kwargs):
    dev, instance, workers, _, _ = stack
    run_id = dev.client().submit_job_execution(job, **kwargs)
    return wait_for_run(instance, run_id), instance


def names(ran_on):
    return {step: worker.rsplit("-", 1)[0] for step, worker in ran_on.items()}


def test_routing_step_tag_run_tag_default(stack):
    run, instance = run_job(stack, "routed")
    assert run.status == DagsterRunStatus.SUCCESS
    assert names(step_workers(instance, run.run_id)) == {"on_a": "wa", "on_b": "wb", "untagged": "main"}

    run, instance = run_job(stack, "routed", tags={"dagster-taskiq/queue": "r"})
    assert run.status == DagsterRunStatus.SUCCESS
    assert names(step_workers(instance, run.run_id)) == {"on_a": "wa", "on_b": "wb", "untagged": "wb"}


def test_priority_band_starts_first_behind_a_busy_slot(stack):
    dev, instance, _, config, tmp = stack
    run_id = dev.client().submit_job_execution("prioritized")
    queued = [f"{run_id}/normal_{i}/1" for i in range(6)] + [f"{run_id}/urgent/1"]

    def all_queued():
        try:
            return all(call_json("TaskStatus", config, t)["state"] == "QUEUED" for t in queued)
        except Exception:
            return False

    wait_for(all_queued, 180, "the 7 prio steps to wait behind the busy slot")
    (tmp / "release-hold").write_text("")
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    starts = {e.dagster_event.step_key: e.timestamp for e in step_events(instance, run_id, DagsterEventType.STEP_START)}
    later = [step for step in starts if step.startswith("normal_") and starts[step] < starts["urgent"]]
    assert later == [], f"the high-priority step must start before every normal one: {starts}"


@pytest.mark.parametrize("job", ["retried", "dynamic", "diamond"])
def test_dagster_features_work(stack, job):
    run, instance = run_job(stack, job)
    assert run.status == DagsterRunStatus.SUCCESS
    if job == "retried":
        retries = step_events(instance, run.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
        assert [e.dagster_event.step_key for e in retries] == ["flaky"]
    if job == "dynamic":
        succeeded = {e.dagster_event.step_key for e in step_events(instance, run.run_id, DagsterEventType.STEP_SUCCESS)}
        assert succeeded == {"fan", "square[k0]", "square[k1]", "square[k2]", "total"}


def test_skipped_branch_never_runs(stack):
    run, instance = run_job(stack, "optional")
    assert run.status == DagsterRunStatus.SUCCESS
    started = {e.dagster_event.step_key for e in step_events(instance, run.run_id, DagsterEventType.STEP_START)}
    assert started == {"branch", "after_taken"}
    skipped = {e.dagster_event.step_key for e in step_events(instance, run.run_id, DagsterEventType.STEP_SKIPPED)}
    assert skipped == {"after_skipped"}
    assert "after_skipped" not in step_workers(instance, run.run_id)


def test_step_nobody_takes_fails_naming_its_queue(stack):
    run, instance = run_job(stack, "stuck")
    assert run.status == DagsterRunStatus.FAILURE
    failures = step_events(instance, run.run_id, DagsterEventType.STEP_FAILURE)
    assert [e.dagster_event.step_key for e in failures] == ["waits_forever"]
    reason = failures[0].dagster_event.step_failure_data.error.message
    assert 'in queue "nobody"' in reason and "max_queue_wait_seconds=2" in reason, reason
    records = instance.get_records_for_run(run.run_id).records
    assert any("No live worker listens to queue nobody" in r.event_log_entry.user_message for r in records)

    # The failed step's message is still in the queue: a worker started later must drop it unrun.
    _, _, workers, config, tmp = stack
    task_id = f"{run.run_id}/waits_forever/1"
    late = workers["late"] = Worker("late", ["nobody"], str(tmp), concurrency=1)
    wait_for(lambda: "canceled before it started" in late.log(), 60, "the late worker to drop the step")
    assert "task started" not in late.log(), late.log()
    record = call_json("TaskStatus", config, task_id)
    assert record["state"] == "FAILED" and "max_queue_wait_seconds=2" in record["reason"], record


def test_invalid_executor_config_fails_at_run_start_naming_the_key(stack):
    run, instance = run_job(stack, "misconfigured")
    assert run.status == DagsterRunStatus.FAILURE
    # The error travels in the run failure's serialized error data.
    text = " ".join(serialize_value(r.event_log_entry) for r in instance.get_records_for_run(run.run_id).records)
    assert 'unknown key \\"config_source.max_wait\\"' in text and "max_queue_wait_seconds" in text, text[-3000:]
    assert step_events(instance, run.run_id, DagsterEventType.STEP_START) == []


def test_terminate_run_while_a_step_sleeps(stack):
    dev, instance, _, config, _ = stack
    run_id = dev.client().submit_job_execution("sleepy")
    task_id = f"{run_id}/sleeps/1"
    wait_for(
        lambda: (r := _status(config, task_id)) is not None and r["state"] == "RUNNING" and r.get("pid"), 180, "step"
    )
    pid = _status(config, task_id)["pid"]
    dev.terminate(run_id)
    run = wait_for_run(instance, run_id, timeout=120)
    assert run.status == DagsterRunStatus.CANCELED
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the step process to be gone")
    assert _status(config, task_id)["state"] in ("CANCELED", "FAILED")


def _status(config, task_id):
    try:
        return call_json("TaskStatus", config, task_id)
    except Exception:
        return None
