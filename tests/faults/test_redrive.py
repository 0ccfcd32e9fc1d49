"""SQS's own redrive: a task message that SQS moved to the dead-letter queue after maxReceiveCount
receives reached no worker, so no worker recorded it. The next health check must fail its step (the
executor's check_step_health) or its run (TaskiqRunLauncher.check_run_worker_health), naming the
DLQ, and leave the message in the DLQ for operators."""

import json
import os
import time

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.launcher import LaunchRunContext, WorkerStatus

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.tags import TASK_ID_TAG

from ..e2e.stack import (
    aws_client,
    create_queues,
    dagster_home,
    execute_job,
    only_run,
    queue_url,
    step_events,
    task_record,
    transport_env,
    wait_for,
    write_launcher_home,
)

JOBS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jobs", "fault_jobs.py"))


@pytest.fixture
def env(moto_endpoint):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "redrive").items():
        patch.setenv(name, value)
    yield dict(os.environ)
    patch.undo()


QUEUE = "redrive"  # no worker listens to it


def redrive(env: dict, sqs_name: str, receives: int) -> str:
    """Receives the one message of a queue `receives` times without deleting it, as a consumer that
    dies before its delete every time would, then once more: SQS moves it to the DLQ instead of
    delivering it. Returns the task id the message carries."""
    sqs, url = aws_client(env, "sqs"), queue_url(env, sqs_name)
    visible, hidden = dead_letters(env)
    task_ids = set()
    for i in range(receives):
        messages = wait_for(
            lambda: sqs.receive_message(
                QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=0, MessageAttributeNames=["All"]
            ).get("Messages"),
            120,
            f"receive {i + 1} of the task message in {sqs_name}",
        )
        task_ids.add(messages[0]["MessageAttributes"]["dagster_taskiq_task_id"]["StringValue"])
    assert len(task_ids) == 1, task_ids
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages")
    assert dead_letters(env) == (visible + 1, hidden)
    return task_ids.pop()


def dead_letters(env: dict) -> tuple[int, int]:
    """Visible and hidden messages in the DLQ of QUEUE."""
    attrs = aws_client(env, "sqs").get_queue_attributes(
        QueueUrl=queue_url(env, f"{QUEUE}-dlq"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_step_dead_lettered_by_sqs_fails_at_its_next_health_check(env, tmp_path, fault_report):
    config = create_queues(env, "dagster", QUEUE)
    home = dagster_home(tmp_path)
    job = execute_job(JOBS, "dead_lettered", home, str(tmp_path / "job.log"))
    try:
        task_id = redrive(env, QUEUE, receives=10)
        moved = time.monotonic()
        job.wait(180)
        ended = time.monotonic() - moved
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    instance = DagsterInstance.from_config(home)
    try:
        run = only_run(instance, "dead_lettered")
        log = (tmp_path / "job.log").read_text()
        assert run.status == DagsterRunStatus.FAILURE, log[-3000:]
        failures = step_events(instance, run.run_id, DagsterEventType.STEP_FAILURE)
        assert [e.dagster_event.step_key for e in failures] == ["never_taken"], log[-3000:]
        reason = failures[0].dagster_event.step_failure_data.error.message
    finally:
        instance.dispose()
    prefix = env["DAGSTER_TASKIQ_QUEUE_PREFIX"]
    expected = f"dead-lettered by SQS into {prefix}{QUEUE}-dlq after 10 receives from {prefix}{QUEUE} "
    assert "failed health check" in reason and expected in reason, reason
    assert task_record(config, task_id)["state"] == "FAILED"
    assert dead_letters(env) == (1, 0), "the message stays in the DLQ, visible to operators"
    fault_report(
        "SQS redrive moved a step's message to the DLQ (10 receives, no delete)",
        "step fails at the executor's next health check naming the DLQ; message kept in the DLQ",
        f"run FAILURE {ended:.0f}s after the move (health check every 20s): {expected.strip()}",
    )


def test_run_dead_lettered_by_sqs_is_unhealthy_at_the_next_check(env, tmp_path, fault_report):
    create_queues(env, "dagster", QUEUE)
    # An operator's tighter receive limit on the runs queue: the reason must quote that queue's limit.
    sqs = aws_client(env, "sqs")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=queue_url(env, f"{QUEUE}-dlq"), AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    sqs.set_queue_attributes(QueueUrl=queue_url(env, f"{QUEUE}-runs"), Attributes={"RedrivePolicy": policy})

    instance = DagsterInstance.from_config(write_launcher_home(str(tmp_path / "home")))
    try:
        recon = ReconstructableJob.for_file(JOBS, "ok")
        run = instance.create_run_for_job(
            job_def=recon.get_definition(),
            job_code_origin=recon.get_python_origin(),
            tags={"dagster-taskiq/queue": QUEUE},
        )
        launcher = instance.run_launcher
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        run = instance.get_run_by_id(run.run_id)
        before = launcher.check_run_worker_health(run)
        assert before.status == WorkerStatus.RUNNING, before  # queued: healthy for max_queue_wait_seconds

        assert redrive(env, f"{QUEUE}-runs", receives=2) == run.tags[TASK_ID_TAG]
        after = launcher.check_run_worker_health(run)  # the first check after the move
    finally:
        instance.dispose()
    prefix = env["DAGSTER_TASKIQ_QUEUE_PREFIX"]
    expected = f"dead-lettered by SQS into {prefix}{QUEUE}-dlq after 2 receives from {prefix}{QUEUE}-runs "
    assert after.status == WorkerStatus.FAILED and expected in after.msg, after
    assert dead_letters(env) == (1, 0), "the message stays in the DLQ, visible to operators"
    fault_report(
        "SQS redrive moved a run's message to the DLQ (runs queue maxReceiveCount 2)",
        "check_run_worker_health FAILED at the first check, naming the DLQ and the limit",
        f"{after.status.value}: {expected.strip()}",
    )


def test_forged_messages_dead_lettered_by_sqs_fail_nothing(env, fault_report):
    """The task id of an unauthenticated message is no more trusted in the DLQ than in the queue: a
    forged copy that SQS moved there must not fail the queued task it names."""
    config = create_queues(env, "dagster", QUEUE)
    request = {"kind": "execute_step", "run_id": "r", "step_key": "victim", "attempt": 1, "args": "a"}
    request["step_tags"] = {"dagster-taskiq/queue": QUEUE}
    task_id = call_json("Submit", config, json.dumps(request))["task_id"]
    sqs, url = aws_client(env, "sqs"), queue_url(env, QUEUE)
    genuine = wait_for(
        lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"]).get("Messages"),
        30,
        "the submitted message",
    )[0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=genuine["ReceiptHandle"])  # the task waits, its message gone
    signature = genuine["MessageAttributes"]["dagster_taskiq_sig"]["StringValue"]
    forgeries = {
        "unsigned": {},
        "tampered": {"dagster_taskiq_sig": {"DataType": "String", "StringValue": signature}},
    }
    for kind, signed in forgeries.items():
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(json.loads(genuine["Body"]) | {"args": f"{kind}-args"}),
            MessageAttributes={"dagster_taskiq_task_id": {"DataType": "String", "StringValue": task_id}, **signed},
        )
        assert redrive(env, QUEUE, receives=10) == task_id
        verdict = call_json("TaskHealth", config, task_id)
        assert verdict["status"] == "QUEUED" and verdict["healthy"], verdict
        assert task_record(config, task_id)["state"] == "QUEUED"
        fault_report(
            f"{kind} copy naming a queued task, moved to the DLQ by SQS",
            "the task it names stays QUEUED and healthy",
            f"health {verdict['status']}, healthy={verdict['healthy']}; record QUEUED",
        )
