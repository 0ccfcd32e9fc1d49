"""Shared fixtures: a real moto server (SQS + S3) and an environment pointing the Go core at it."""

import os
import secrets
import uuid

import pytest

from dagster_taskiq_go.dev import moto_server

SIGNING_KEY = "test-signing-key-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """MOTO_ENDPOINT when CI started moto, else a moto server of our own on a free loopback port."""
    if os.environ.get("MOTO_ENDPOINT"):
        yield os.environ["MOTO_ENDPOINT"]
        return
    with moto_server(str(tmp_path_factory.mktemp("moto") / "moto.log")) as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """Dummy credentials, a signing key and a fresh bucket name, as environment variables."""
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "DAGSTER_TASKIQ_ENDPOINT_URL": moto_endpoint,
        "DAGSTER_TASKIQ_S3_BUCKET": f"test-{uuid.uuid4().hex[:12]}",
        "DAGSTER_TASKIQ_SIGNING_KEY": SIGNING_KEY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def core_config(aws_env):
    """Core config JSON for a fresh bucket and queue prefix, with the default queue created."""
    from dagster_taskiq_go._pyshim import call
    from dagster_taskiq_go.config import core_config_json

    config = core_config_json(
        {
            "s3_bucket": aws_env["DAGSTER_TASKIQ_S3_BUCKET"],
            "endpoint_url": aws_env["DAGSTER_TASKIQ_ENDPOINT_URL"],
            "queue_prefix": f"t{uuid.uuid4().hex[:8]}-",
        }
    )
    call("QueueCreate", config, "dagster", "high,normal,low")
    return config
