"""examples/s3_project end to end, as its README runs it: its own dagster.yaml (TaskiqRunLauncher) in
DAGSTER_HOME, `dagster dev -f definitions.py`, workers from the CLI, step outputs in S3 through
dagster-aws's S3 IO manager."""

import os
import shutil

import boto3
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from dagster_taskiq_go.dev import moto_server, step_workers
from dagster_taskiq_go.tags import RUN_QUEUE_TAG, TASK_ID_TAG

from .stack import DagsterDev, Worker, create_queues, transport_env, wait_for_run

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "s3_project")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(os.path.join(EXAMPLE, "dagster.yaml"), home / "dagster.yaml")
    # The example uses the default queue prefix, as a user would: its own moto keeps it apart from
    # the other modules' queues.
    with moto_server(str(tmp / "moto.log")) as endpoint:
        env = transport_env(endpoint, "example")
        del env["DAGSTER_TASKIQ_QUEUE_PREFIX"]
        patch = pytest.MonkeyPatch()
        for name, value in env.items():
            patch.setenv(name, value)
        create_queues(env, "dagster", "heavy")
        workers = {
            "main": Worker("main", ["dagster"], str(tmp)),
            "heavy": Worker("heavy", ["heavy"], str(tmp), concurrency=1, extra=("--run-concurrency", "0")),
        }
        dev = DagsterDev(os.path.abspath(os.path.join(EXAMPLE, "definitions.py")), str(home), str(tmp))
        instance = DagsterInstance.from_config(str(home))
        try:
            yield dev, instance, workers, env
        finally:
            instance.dispose()
            dev.stop()
            for worker in workers.values():
                worker.stop()
            patch.undo()


def test_squares_runs_on_workers_with_outputs_in_s3(stack):
    dev, instance, workers, env = stack
    run_id = dev.client().submit_job_execution("squares")
    run = wait_for_run(instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, [w.log()[-3000:] for w in workers.values()]

    # The run itself went to a worker's run slot, through the launcher in dagster.yaml.
    assert run.tags[TASK_ID_TAG] == f"{run_id}/execute"
    assert run.tags[RUN_QUEUE_TAG] == "dagster"
    # Each step ran on a worker; the tagged one on the worker serving "heavy".
    ran_on = {step: worker_id.rsplit("-", 1)[0] for step, worker_id in step_workers(instance, run_id).items()}
    assert ran_on == {"extract": "main", "transform": "heavy", "load": "main"}

    # Outputs crossed processes through S3, not a local disk.
    s3 = boto3.client("s3", endpoint_url=env["DAGSTER_TASKIQ_ENDPOINT_URL"], region_name=env["AWS_REGION"])
    listing = s3.list_objects_v2(Bucket=env["DAGSTER_TASKIQ_S3_BUCKET"], Prefix=f"io-manager/storage/{run_id}/")
    stored = {obj["Key"].split("/")[3] for obj in listing.get("Contents", [])}
    assert stored == {"extract", "transform", "load"}, listing.get("Contents")

    messages = [r.event_log_entry.user_message for r in instance.get_records_for_run(run_id).records]
    assert "sum of squares: 385" in messages
