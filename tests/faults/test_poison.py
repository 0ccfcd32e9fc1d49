"""Poison messages through a real worker process: malformed JSON, an unknown kind, a bad signature and
a payload pointer to a missing S3 object. Each is refused without running anything and with a log line
naming the reason; authentic ones fail their task record; the worker keeps serving."""

import hashlib
import hmac
import json
import os

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.dev import step_workers

from ..e2e.stack import (
    Worker,
    aws_client,
    create_queues,
    dagster_home,
    execute_job,
    only_run,
    queue_url,
    task_record,
    transport_env,
    wait_for,
)

JOBS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jobs", "fault_jobs.py"))
REASON_ATTR = "dagster_taskiq_dead_letter_reason"


def sign(key: str, body: str) -> str:
    """HMAC-SHA256 of a body, as submitters sign. The product signs only the envelopes it builds (it
    offers no way to sign arbitrary bytes, rightly), but an authentic yet unrunnable message is what a
    buggy or newer submitter holding the key would send, and a submitter with another key signs
    genuine bodies the workers cannot verify: only signing here can make them."""
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def attrs(**values: str) -> dict:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


@pytest.fixture
def env(moto_endpoint, tmp_path):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "poison").items():
        patch.setenv(name, value)
    patch.setenv("TASKIQ_TEST_DIR", str(tmp_path))
    yield dict(os.environ)
    patch.undo()


def test_poison_messages_are_refused_and_the_worker_keeps_serving(env, tmp_path, fault_report):
    config = create_queues(env, "dagster")
    sqs, url = aws_client(env, "sqs"), queue_url(env, "dagster")

    def submit(step_key: str, args: str = "args") -> dict:
        request = {"kind": "execute_step", "run_id": "poison-run", "step_key": step_key, "attempt": 1, "args": args}
        return call_json("Submit", config, json.dumps(request))

    # Three submitted envelopes, taken off the queue so that only the test's altered copies reach the worker.
    tampered, unknown, other_key = (submit(step)["task_id"] for step in ("tampered", "unknown", "other_key"))
    genuine = {}

    def take_genuine():
        for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"]).get(
            "Messages", []
        ):
            genuine[m["MessageAttributes"]["dagster_taskiq_task_id"]["StringValue"]] = m
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(genuine) == 3

    wait_for(take_genuine, 30, "the three submitted messages")

    # Bad signature: the envelope with other args, sent with the genuine signature.
    tampered_body = json.dumps(json.loads(genuine[tampered]["Body"]) | {"args": "other-args"})
    sig = genuine[tampered]["MessageAttributes"]["dagster_taskiq_sig"]["StringValue"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=tampered_body,
        MessageAttributes=attrs(dagster_taskiq_sig=sig, dagster_taskiq_task_id=tampered),
    )

    # Malformed JSON, validly signed.
    malformed = '{"v": 1, "kind": "execute_step", "task_id": '
    key = env["DAGSTER_TASKIQ_SIGNING_KEY"]
    sqs.send_message(
        QueueUrl=url, MessageBody=malformed, MessageAttributes=attrs(dagster_taskiq_sig=sign(key, malformed))
    )

    # The genuine body, signed by a submitter with another key.
    other_body = genuine[other_key]["Body"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=other_body,
        MessageAttributes=attrs(dagster_taskiq_sig=sign("another-key", other_body), dagster_taskiq_task_id=other_key),
    )

    # Unknown kind, validly signed: the other envelope with its kind changed, signed again.
    unknown_body = json.dumps(json.loads(genuine[unknown]["Body"]) | {"kind": "shell"})
    sqs.send_message(
        QueueUrl=url,
        MessageBody=unknown_body,
        MessageAttributes=attrs(dagster_taskiq_sig=sign(key, unknown_body), dagster_taskiq_task_id=unknown),
    )

    # A payload pointer to a missing object: args above the threshold travel through S3; delete them.
    offloaded = submit("offloaded", args="x" * 300_000)
    assert offloaded["payload_offloaded"]
    payload_key = f"dagster-taskiq/payloads/{offloaded['task_id']}"
    aws_client(env, "s3").delete_object(Bucket=env["DAGSTER_TASKIQ_S3_BUCKET"], Key=payload_key)

    worker = Worker("poison", ["dagster"], str(tmp_path))
    try:
        dlq, reasons = queue_url(env, "dagster-dlq"), {}  # body → the worker's dead-letter reason

        def dead_letters():
            for m in sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
            ).get("Messages", []):
                reasons[m["Body"]] = m["MessageAttributes"][REASON_ATTR]["StringValue"]
            return len(reasons) >= 4

        wait_for(dead_letters, 60, "four dead letters")
        payload = wait_for(
            lambda: (r := task_record(config, offloaded["task_id"])) and r["state"] != "QUEUED" and r, 60, "payload"
        )
        log = worker.log()

        # The good task afterwards: a real run of a real job, its step on this worker.
        home = dagster_home(tmp_path)
        job = execute_job(JOBS, "ok", home, str(tmp_path / "job.log"))
        job.wait(240)
        instance = DagsterInstance.from_config(home)
        try:
            run = only_run(instance, "ok")
            assert run.status == DagsterRunStatus.SUCCESS, (tmp_path / "job.log").read_text()[-3000:]
            ran_on = step_workers(instance, run.run_id)
        finally:
            instance.dispose()
        assert ran_on["hello"].startswith("poison-"), ran_on
        assert worker.proc.poll() is None, "the worker must keep serving"
    finally:
        worker.stop()

    lines = [line for line in log.splitlines() if 'msg="dead-lettering message"' in line]
    cases = [  # fault, expected outcome, dead-letter reason, record, what the worker's log line says
        ("bad signature (signed body altered)", "DLQ, record untouched", tampered_body, tampered, "signature"),
        ("malformed JSON, validly signed", "DLQ", malformed, None, "not an envelope"),
        ("genuine body signed with another key", "DLQ, record FAILED naming the key", other_body, other_key, "key"),
        ('unknown kind "shell", validly signed', "DLQ, record FAILED", unknown_body, unknown, "unknown task kind"),
    ]
    assert reasons[tampered_body] == "missing or invalid signature"
    assert reasons[malformed].startswith("message body is not an envelope")
    assert reasons[unknown_body] == 'unknown task kind "shell"'
    assert task_record(config, tampered)["state"] == "QUEUED", "an unauthenticated message must not fail its task"
    verdict = call_json("TaskHealth", config, tampered)  # nor may the health check's look into the DLQ
    assert verdict["status"] == "QUEUED" and verdict["healthy"], verdict
    mismatch = task_record(config, other_key)
    assert mismatch["state"] == "FAILED" and "share one signing key" in mismatch["reason"], mismatch
    failed = task_record(config, unknown)
    assert failed["state"] == "FAILED" and failed["reason"] == 'dead-lettered: unknown task kind "shell"', failed
    for _, _, _, _, logged in cases:
        assert any("reason=" in line and logged in line for line in lines), (logged, lines)
    assert payload["state"] == "FAILED" and payload["reason"].startswith("payload unavailable: "), payload
    assert "exit_code" not in payload, "nothing ran"
    assert any('msg="task not run"' in line and "payload unavailable" in line for line in log.splitlines()), log
    assert worker.log().count("task started") == 1, "only the good task ran"

    for fault, expected, body, task_id, _ in cases:
        state = task_record(config, task_id)["state"] if task_id else "none (no task id)"
        fault_report(fault, expected, f"DLQ ({reasons[body]}); record {state}; logged; worker kept serving")
    fault_report(
        "payload pointer to a missing S3 object",
        "record FAILED, not run (authentic: no DLQ)",
        f"record {payload['state']}: {payload['reason'][:50]}...; logged",
    )
    fault_report(
        "good task after the poison", "runs on the same worker", f"run {run.status.value} on {ran_on['hello']}"
    )
