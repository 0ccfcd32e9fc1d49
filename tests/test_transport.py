"""Round trips through the bridge and a real moto server: submit, status, cancel, signature."""

import hashlib
import hmac
import json

import boto3
import pytest

from dagster_taskiq_go._pyshim import call, call_json
from dagster_taskiq_go._pyshim.errors import TaskiqConfigError, TaskiqNotFoundError

from .conftest import SIGNING_KEY


def sqs_client(endpoint):
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def step_request(**overrides):
    return json.dumps(
        {
            "kind": "execute_step",
            "run_id": "run-1",
            "step_key": "op_a",
            "attempt": 1,
            "args": "opaque-args",
            **overrides,
        }
    )


def test_submit_round_trip_through_moto(core_config, moto_endpoint):
    result = call_json("Submit", core_config, step_request())
    assert result["task_id"] == "run-1/op_a/1"
    assert result["queue"] == "dagster"

    record = call_json("TaskStatus", core_config, result["task_id"])
    assert record["state"] == "QUEUED"
    assert record["step_key"] == "op_a"

    sqs = sqs_client(moto_endpoint)
    messages = sqs.receive_message(QueueUrl=result["queue_url"], MessageAttributeNames=["All"], WaitTimeSeconds=1)[
        "Messages"
    ]
    assert len(messages) == 1
    body = messages[0]["Body"]
    envelope = json.loads(body)
    assert envelope["kind"] == "execute_step"
    assert envelope["args"] == "opaque-args"
    assert "DelaySeconds" not in json.dumps(messages[0])
    # An independent HMAC-SHA256 over the body matches the signature the Go core attached.
    sig = messages[0]["MessageAttributes"]["dagster_taskiq_sig"]["StringValue"]
    assert hmac.compare_digest(sig, hmac.new(SIGNING_KEY.encode(), body.encode(), hashlib.sha256).hexdigest())


def test_cancel_queued_task(core_config):
    task_id = call_json("Submit", core_config, step_request(step_key="op_b"))["task_id"]
    assert call_json("Cancel", core_config, task_id) == {"task_id": task_id, "state": "CANCELED", "requested": True}
    assert call_json("TaskStatus", core_config, task_id)["state"] == "CANCELED"


def test_missing_task_and_queue_are_not_found(core_config):
    with pytest.raises(TaskiqNotFoundError):
        call("TaskStatus", core_config, "run-1/nope/1")
    with pytest.raises(TaskiqNotFoundError, match='queue "elsewhere"'):
        call("Submit", core_config, step_request(step_tags={"dagster-taskiq/queue": "elsewhere"}))


def test_env_changes_after_load_reach_go(core_config, monkeypatch):
    monkeypatch.setenv("DAGSTER_TASKIQ_SIGNING_KEY", "short")
    with pytest.raises(TaskiqConfigError, match="shorter than 16 bytes"):
        call("Submit", core_config, step_request())
    monkeypatch.delenv("DAGSTER_TASKIQ_SIGNING_KEY")
    with pytest.raises(TaskiqConfigError, match="no signing key"):
        call("Submit", core_config, step_request())


def test_health_of_a_task_nobody_takes(aws_env):
    """config_source.max_queue_wait_seconds decides when a task nobody picks up is failed, naming its queue."""
    import time

    from dagster_taskiq_go.config import core_config_json

    config = core_config_json(
        {
            "s3_bucket": aws_env["DAGSTER_TASKIQ_S3_BUCKET"],
            "endpoint_url": aws_env["DAGSTER_TASKIQ_ENDPOINT_URL"],
            "queue_prefix": "health-",
            "create_missing_queues": True,
            "config_source": {"max_queue_wait_seconds": 1},
        }
    )
    call("QueueCreate", config, "lonely", "normal")
    task_id = call_json("Submit", config, step_request(step_tags={"dagster-taskiq/queue": "lonely"}))["task_id"]
    verdict = call_json("TaskHealth", config, task_id)
    assert (verdict["status"], verdict["healthy"]) == ("QUEUED", True)
    deadline = time.monotonic() + 30
    while verdict["healthy"] and time.monotonic() < deadline:
        time.sleep(0.5)
        verdict = call_json("TaskHealth", config, task_id)
    assert verdict["status"] == "FAILED" and not verdict["healthy"]
    assert 'in queue "lonely"' in verdict["reason"] and "max_queue_wait_seconds=1" in verdict["reason"]
    assert call_json("TaskHealth", config, "run-1/never/1")["status"] == "NOT_FOUND"
