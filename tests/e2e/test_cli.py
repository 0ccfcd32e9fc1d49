"""Every `dagster-taskiq-go worker` and `queue` command, run as a user runs them, against moto."""

import json
import os
import subprocess
import sys

import pytest

from dagster_taskiq_go._pyshim import call_json

from .stack import Worker, transport_env, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(moto_endpoint):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "cli").items():
        patch.setenv(name, value)
    yield dict(os.environ)
    patch.undo()


def cli(*args, input=None, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "dagster_taskiq_go", *args], capture_output=True, text=True, input=input, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def core_config(env):
    from dagster_taskiq_go.config import core_config_json

    return core_config_json(
        {
            "s3_bucket": env["DAGSTER_TASKIQ_S3_BUCKET"],
            "endpoint_url": env["DAGSTER_TASKIQ_ENDPOINT_URL"],
            "queue_prefix": env["DAGSTER_TASKIQ_QUEUE_PREFIX"],
        }
    )


def test_queue_commands(env):
    out = cli("queue", "create", "work", "--bands", "high,normal").stdout
    assert [line.split("\t")[1] for line in out.splitlines()] == ["high", "normal", "dead-letter"]
    assert "work\thigh\thttp" in out

    changed = cli("queue", "create", "work", "--bands", "normal", check=False)
    assert changed.returncode != 0 and 'already exists with bands "high,normal"' in changed.stderr

    config = core_config(env)
    for i in range(3):
        request = {
            "kind": "execute_step",
            "run_id": "r",
            "step_key": f"s{i}",
            "attempt": 1,
            "args": "x",
            "step_tags": {"dagster-taskiq/queue": "work"},
        }
        call_json("Submit", config, json.dumps(request))
    stats = cli("queue", "stats", "work").stdout
    assert "band high" in stats and "steps: visible 3" in stats, stats
    assert "live workers none" in stats

    refused = cli("queue", "purge", "work", input="n\n", check=False)
    assert refused.returncode != 0 and "Aborted" in refused.stderr
    assert "purged work: 3 messages were visible" in cli("queue", "purge", "work", "--yes").stdout
    wait_for(lambda: "steps: visible 0" in cli("queue", "stats", "work").stdout, 30, "the purge to show")

    missing = cli("queue", "stats", "nowhere", check=False)
    assert missing.returncode != 0 and 'queue "nowhere"' in missing.stderr


def test_worker_commands(env, tmp_path):
    cli("queue", "create", "wq")
    worker = Worker("clitest", ["wq"], str(tmp_path))
    try:
        listed = wait_for(lambda: (out := cli("worker", "list").stdout) and "clitest-" in out and out, 30, "listing")
        assert " live " in listed and "wq" in listed
        status = cli("worker", "status", "clitest").stdout
        assert "queues wq; step slots 2, run slots 1" in status
        assert "live workers clitest-" in cli("queue", "stats", "wq").stdout
        assert "asked clitest-" in cli("worker", "terminate", "clitest").stdout
        assert worker.proc.wait(60) == 0, worker.log()[-2000:]
        assert "stop ordered through the control queue" in worker.log()
    finally:
        worker.stop()
    assert "no workers registered" in cli("worker", "list").stdout
    unknown = cli("worker", "terminate", "nobody", check=False)
    assert unknown.returncode != 0 and 'no live worker matches "nobody"' in unknown.stderr


def test_worker_sigterm_exits_cleanly(env, tmp_path):
    cli("queue", "create", "sig")
    worker = Worker("sig", ["sig"], str(tmp_path))
    assert worker.stop() == 0
    assert "worker stopped" in worker.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--poll-wait", "30"], "--poll-wait: 30 is outside 1..20 seconds"),
        (["--concurrency", "0"], "--concurrency: 0 must be at least 1"),
        (["-q", "bad name"], "--queue"),
        (["--log-level", "loud"], "Invalid value for '-l' / '--log-level'"),
    ],
)
def test_worker_start_rejects_bad_options(env, args, message):
    result = cli("worker", "start", *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_worker_start_refuses_to_run_without_a_key(env):
    result = subprocess.run(
        [sys.executable, "-m", "dagster_taskiq_go", "worker", "start", "-q", "wq"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in env.items() if k != "DAGSTER_TASKIQ_SIGNING_KEY"},
    )
    assert result.returncode != 0 and "--insecure-no-signing" in result.stderr


def test_worker_options_come_from_the_environment(env):
    result = subprocess.run(
        [sys.executable, "-m", "dagster_taskiq_go", "worker", "start"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "DAGSTER_TASKIQ_WORKER_START_POLL_WAIT": "30"},
    )
    assert result.returncode == 2 and "--poll-wait: 30 is outside 1..20 seconds" in result.stderr, result.stderr
    assert "(--poll-wait was set by DAGSTER_TASKIQ_WORKER_START_POLL_WAIT)" in result.stderr, result.stderr
