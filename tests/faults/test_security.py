"""Security: forged task messages never run, and secrets never reach a log.

The job file is a probe: imported inside a worker's task process it writes a marker named for the
task. The genuine step of a real run (dagster dev + a worker) must import it, proving the probe works;
an unsigned copy and a tampered copy (a genuine signature over other bytes) that name the same code
under other task ids must not. Then every log and record the run produced is scanned for the AWS
secret key and the signing key."""

import json
import os
import pathlib
import secrets

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._serdes import serialize_value

from ..e2e.stack import (
    DagsterDev,
    Worker,
    aws_client,
    create_queues,
    dagster_home,
    queue_url,
    task_record,
    transport_env,
    wait_for,
    wait_for_run,
)

JOBS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jobs", "fault_jobs.py"))


@pytest.fixture
def env(moto_endpoint, tmp_path):
    patch = pytest.MonkeyPatch()
    # Distinct secrets, so that finding them in a log cannot be a coincidence.
    secret_env = {
        "AWS_SECRET_ACCESS_KEY": "aws-secret-" + secrets.token_hex(16),
        "DAGSTER_TASKIQ_SIGNING_KEY": "signing-key-" + secrets.token_hex(16),
    }
    for name, value in (transport_env(moto_endpoint, "security") | secret_env).items():
        patch.setenv(name, value)
    patch.setenv("TASKIQ_TEST_DIR", str(tmp_path))
    yield dict(os.environ)
    patch.undo()


def attrs(**values: str) -> dict:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


def test_forged_messages_never_run_and_secrets_never_reach_a_log(env, tmp_path, fault_report):
    config = create_queues(env, "dagster", "sec")
    home = dagster_home(tmp_path)
    dev = DagsterDev(JOBS, home, str(tmp_path))
    instance = DagsterInstance.from_config(home)
    worker = None
    try:
        run_id = dev.client().submit_job_execution("probe")
        # Hold the genuine step message (no worker listens to "sec" yet) to forge copies of it.
        sqs, url = aws_client(env, "sqs"), queue_url(env, "sec")
        genuine = wait_for(
            lambda: sqs.receive_message(
                QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=300, MessageAttributeNames=["All"]
            ).get("Messages"),
            180,
            "the probe step's message",
        )[0]
        body = json.loads(genuine["Body"])
        assert body["task_id"] == f"{run_id}/probed/1"
        forged = {
            "unsigned": (f"{run_id}/probed/98", {}),
            "tampered": (
                f"{run_id}/probed/99",
                {"dagster_taskiq_sig": genuine["MessageAttributes"]["dagster_taskiq_sig"]["StringValue"]},
            ),
        }
        for task_id, signature in forged.values():
            # Same Dagster args (they name the probe's code), another task id.
            sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps(body | {"task_id": task_id, "attempt": int(task_id.rsplit("/", 1)[1])}),
                MessageAttributes=attrs(dagster_taskiq_task_id=task_id, **signature),
            )
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=genuine["ReceiptHandle"], VisibilityTimeout=0)

        worker = Worker("sec", ["sec"], str(tmp_path), extra=("--log-level", "debug"))  # the most it logs
        run = wait_for_run(instance, run_id)
        assert run.status == DagsterRunStatus.SUCCESS, worker.log()[-3000:]
        dlq, reasons = queue_url(env, "sec-dlq"), {}

        def dead_letters():
            for m in sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
            ).get("Messages", []):
                reasons[json.loads(m["Body"])["task_id"]] = m["MessageAttributes"]["dagster_taskiq_dead_letter_reason"][
                    "StringValue"
                ]
            return len(reasons) == 2

        wait_for(dead_letters, 60, "both forged messages in the DLQ")
        worker_log = worker.log()
        event_log = " ".join(serialize_value(r.event_log_entry) for r in instance.get_records_for_run(run_id).records)
    finally:
        instance.dispose()
        dev.stop()
        if worker is not None:
            worker.stop()

    def imported(task_id: str) -> bool:
        return (tmp_path / ("imported-" + task_id.replace("/", "_"))).exists()

    assert imported(f"{run_id}/probed/1"), "the genuine task must import the probe, or the probe proves nothing"
    probe = json.loads((tmp_path / f"imported-{run_id}_probed_1").read_text())
    assert probe["signing_env"] == [], f"task code must not see the signing key: {probe}"
    for kind, (task_id, _) in forged.items():
        assert not imported(task_id), f"the {kind} message ran the probe's code"
        assert reasons[task_id] == "missing or invalid signature", reasons
        assert task_record(config, task_id) is None, "a forged message must not create or change a record"
        assert any("dead-lettering message" in line and task_id in line for line in worker_log.splitlines())
        fault_report(
            f"{kind} message naming a probe module",
            "DLQ, never run, probe never imported",
            f"DLQ ({reasons[task_id]}); probe not imported (genuine task imported it)",
        )

    # Every captured log and record: worker and dagster dev logs, the run's event log, every file of the
    # Dagster home (event log database, compute logs) and every object in the bucket.
    texts = {"worker log": worker_log, "dagster dev log": (tmp_path / "dagster-dev.log").read_text(errors="replace")}
    texts["event log"] = event_log
    for path in pathlib.Path(home).rglob("*"):
        if path.is_file():
            texts[f"dagster home {path.relative_to(home)}"] = path.read_bytes().decode(errors="replace")
    s3, bucket = aws_client(env, "s3"), env["DAGSTER_TASKIQ_S3_BUCKET"]
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        texts[f"s3 {obj['Key']}"] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode(errors="replace")
    assert run_id in texts["worker log"] and run_id in texts["event log"], "the scan must cover this run's logs"
    assert any(name.startswith("s3 ") and "/tasks/" in name for name in texts), sorted(texts)
    for secret in ("AWS_SECRET_ACCESS_KEY", "DAGSTER_TASKIQ_SIGNING_KEY"):
        leaks = [name for name, text in texts.items() if env[secret] in text]
        assert leaks == [], f"{secret} appears in {leaks}"
    fault_report(
        "secrets in logs and records of a real run",
        "AWS secret key and signing key never appear; task code never sees the signing key",
        f"absent from {len(texts)} logs, files and S3 objects; no signing variable in the task's environment",
    )
