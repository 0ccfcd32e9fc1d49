"""Production-like storage: Dagster's run, event log and schedule storage on a real PostgreSQL server
(dagster-postgres), for a fan-out run through `dagster dev` and workers, and for a launcher run."""

import os
from collections import Counter

import pytest
from dagster import DagsterRunStatus

from dagster_taskiq_go.dev import step_workers
from dagster_taskiq_go.tags import TASK_ID_TAG

from ..e2e.stack import JOBS_DIR, STEP_START, launcher_stack, step_events, wait_for_run
from .postgres import postgres_cluster

FAULT_JOBS = os.path.join(JOBS_DIR, "fault_jobs.py")
STEP_WORKERS = {f"pg{i}": (["steps"], {"concurrency": 2, "extra": ("--run-concurrency", "0")}) for i in range(2)}


@pytest.fixture(scope="module")
def storage():
    with postgres_cluster() as config:
        yield config


def test_fanout_run_through_dagster_dev_on_postgres(moto_endpoint, tmp_path_factory, storage, fault_report):
    with launcher_stack(
        moto_endpoint,
        tmp_path_factory,
        "pgdev",
        ["dagster", "steps"],
        STEP_WORKERS,
        jobs=FAULT_JOBS,
        storage=storage,
        launcher=False,
    ) as stack:
        assert type(stack.instance.run_storage).__name__ == "PostgresRunStorage"
        run_id = stack.submit("fanout", run_config={"ops": {"spread": {"config": {"width": 6}}}})
        run = wait_for_run(stack.instance, run_id)
        assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
        starts = Counter(e.dagster_event.step_key for e in step_events(stack.instance, run_id, STEP_START))
        assert len(starts) == 7 and set(starts.values()) == {1}, starts
        ran_on = {w.rsplit("-", 1)[0] for w in step_workers(stack.instance, run_id).values()}
        assert ran_on <= set(STEP_WORKERS), ran_on
        fault_report(
            "Dagster storage on PostgreSQL (dagster-postgres): executor run",
            "fan-out run through dagster dev + workers succeeds",
            f"SUCCESS, 7 steps once each on {len(ran_on)} workers",
        )


def test_launcher_run_on_postgres(moto_endpoint, tmp_path_factory, storage, fault_report):
    workers = {**STEP_WORKERS, "pgrunner": (["runs"], {"concurrency": 1})}
    with launcher_stack(
        moto_endpoint,
        tmp_path_factory,
        "pglaunch",
        ["dagster", "runs", "steps"],
        workers,
        jobs=FAULT_JOBS,
        storage=storage,
    ) as stack:
        assert type(stack.instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        run_id = stack.submit(
            "one_slow",
            run_config={"ops": {"slow": {"config": {"seconds": 1}}}},
            tags={"dagster-taskiq/queue": "runs"},
        )
        run = wait_for_run(stack.instance, run_id)
        assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
        record = stack.finished_record(run.tags[TASK_ID_TAG])
        assert record["state"] == "SUCCESS" and record["worker_id"].startswith("pgrunner-"), record
        fault_report(
            "Dagster storage on PostgreSQL (dagster-postgres): launcher run",
            "run launched on a worker's run slot succeeds",
            f"SUCCESS on {record['worker_id'].rsplit('-', 1)[0]}; its 2 steps on the step workers",
        )
