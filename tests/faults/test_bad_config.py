"""Bad configuration everywhere a user writes it: executor config in run config, launcher config in
dagster.yaml, worker CLI flags, options from the environment, the CLI's config file and config_source.
Each must fail with an error naming the key (and the valid choices where there are any).

Cases already covered elsewhere are not repeated: tests/e2e/test_cli.py (--poll-wait, --concurrency 0,
-q, --log-level, DAGSTER_TASKIQ_WORKER_START_POLL_WAIT), tests/e2e/test_executor.py (an unknown
config_source key failing a real run) and tests/test_bridge.py (the core's own messages)."""

import os
import subprocess
import sys

import pytest
import yaml
from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import DagsterInvalidConfigError
from dagster._serdes import serialize_value

from dagster_taskiq_go._pyshim.errors import TaskiqConfigError

from ..e2e.stack import dagster_home, transport_env, write_launcher_home

JOBS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jobs", "fault_jobs.py"))
TRANSPORT = ("s3_bucket", "endpoint_url", "queue_prefix")
VALID_SOURCE_KEYS = "valid keys: payload_threshold_bytes, max_queue_wait_seconds"


@pytest.fixture
def env(moto_endpoint):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "badcfg").items():
        patch.setenv(name, value)
    yield dict(os.environ)
    patch.undo()


def transport(env: dict) -> dict:
    return {key: env[f"DAGSTER_TASKIQ_{key.upper()}"] for key in TRANSPORT}


# The executor in run config, as a launchpad user writes it.
EXECUTOR = [
    ("unknown key", {"s3_bukket": "b"}, ['"s3_bukket"']),
    ("bad boolean", {"create_missing_queues": "maybe"}, ["config:create_missing_queues", '"maybe"']),
    (
        "threshold out of range",
        {"config_source": {"payload_threshold_bytes": 0}},
        ['key "config_source.payload_threshold_bytes": 0 is outside 1024..'],
    ),
    ("bad queue name", {"default_queue": "a b"}, ['key "default_queue"']),
    ("worker-side knob", {"config_source": {"concurrency": 4}}, ["worker start --concurrency"]),
    (
        "unset env var",
        {"config_source": {"max_queue_wait_seconds": {"env": "TASKIQ_NOT_SET"}}},
        ["key \"config_source.max_queue_wait_seconds\": environment variable 'TASKIQ_NOT_SET' is not set"],
    ),
]


@pytest.mark.parametrize(("case", "bad", "expected"), EXECUTOR, ids=[c[0] for c in EXECUTOR])
def test_executor_config(env, tmp_path, fault_report, case, bad, expected):
    instance = DagsterInstance.from_config(dagster_home(tmp_path))
    run_config = {"execution": {"config": {**transport(env), **bad}}}
    try:
        result = execute_job(ReconstructableJob.for_file(JOBS, "run_configured"), instance, run_config=run_config)
    except (DagsterInvalidConfigError, TaskiqConfigError) as exc:
        # Dagster's schema check, or the core's when the executor is built, refuses the run up front.
        text = str(exc)
    else:  # or the run fails when its run worker builds the executor
        assert not result.success
        records = instance.get_records_for_run(result.run_id).records
        text = " ".join(serialize_value(r.event_log_entry) for r in records).replace('\\"', '"')
        assert not [r for r in records if r.event_log_entry.dagster_event.event_type_value == "STEP_START"]
    finally:
        instance.dispose()
    for fragment in expected:
        assert fragment in text, text[-3000:]
    fault_report(f"executor config: {case}", f"error naming {expected[0]}", excerpt(text, expected[0]))


# The launcher in dagster.yaml: the instance refuses to load its run launcher.
LAUNCHER = [
    ("unknown key", {"queue_prefx": "x-"}, ['"queue_prefx"']),
    (
        "unknown config_source key",
        {"config_source": {"max_wait": 5}},
        [
            'unknown key "config_source.max_wait"',
            VALID_SOURCE_KEYS,
        ],
    ),
    ("worker-side knob", {"config_source": {"poll_wait_seconds": 5}}, ["worker start --poll-wait"]),
    (
        "endpoint without scheme",
        {"endpoint_url": "localhost:4566"},
        ['key "endpoint_url": "localhost:4566" must start with http:// or https://'],
    ),
]


@pytest.mark.parametrize(("case", "bad", "expected"), LAUNCHER, ids=[c[0] for c in LAUNCHER])
def test_launcher_config(env, tmp_path, fault_report, case, bad, expected):
    home = write_launcher_home(str(tmp_path / "home"))
    with open(os.path.join(home, "dagster.yaml")) as f:
        text = yaml.safe_load(f)
    text["run_launcher"]["config"].update(bad)
    with open(os.path.join(home, "dagster.yaml"), "w") as f:
        yaml.safe_dump(text, f)
    with pytest.raises(Exception) as info:
        instance = DagsterInstance.from_config(home)
        try:
            instance.run_launcher  # noqa: B018 (loading it is the test)
        finally:
            instance.dispose()
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)
    fault_report(f"launcher config: {case}", f"error naming {expected[0]}", excerpt(str(info.value), expected[0]))


# `worker start` flags, the environment and the -y config file: a usage error (exit 2) naming the key.
WORKER = [
    ("flag --run-concurrency -1", ["--run-concurrency", "-1"], {}, None, ["--run-concurrency: -1 must be at least 0"]),
    ("flag --heartbeat-interval 0", ["--heartbeat-interval", "0"], {}, None, ["--heartbeat-interval: 0 must be"]),
    (
        "flag --anti-starvation-weight -1",
        ["--anti-starvation-weight", "-1"],
        {},
        None,
        ["--anti-starvation-weight: -1 must be at least 0"],
    ),
    ("flag --grace-period 0", ["--grace-period", "0"], {}, None, ["--grace-period: 0 must be at least 1 second"]),
    ("flag --python missing", ["--python", "/no/such/python"], {}, None, ["'--python'", "/no/such/python"]),
    (
        "env concurrency not a number",
        [],
        {"DAGSTER_TASKIQ_WORKER_START_CONCURRENCY": "many"},
        None,
        [
            "'--concurrency'",
            "'many' is not a valid integer",
            "(set by DAGSTER_TASKIQ_WORKER_START_CONCURRENCY)",
        ],
    ),
    (
        "env log level",
        [],
        {"DAGSTER_TASKIQ_WORKER_START_LOG_LEVEL": "loud"},
        None,
        [
            "'--log-level'",
            "'debug', 'info', 'warn', 'error'",
            "(set by DAGSTER_TASKIQ_WORKER_START_LOG_LEVEL)",
        ],
    ),
    (
        "env heartbeat 0",
        [],
        {"DAGSTER_TASKIQ_WORKER_START_HEARTBEAT_INTERVAL": "0"},
        None,
        [
            "--heartbeat-interval: 0 must be at least 1 second",
            "(--heartbeat-interval was set by DAGSTER_TASKIQ_WORKER_START_HEARTBEAT_INTERVAL)",
        ],
    ),
    (
        "env queue prefix",
        [],
        {"DAGSTER_TASKIQ_QUEUE_PREFIX": "bad prefix"},
        None,
        ['key "queue_prefix"', "(--queue-prefix was set by DAGSTER_TASKIQ_QUEUE_PREFIX)"],
    ),
    (
        "file: unknown key",
        [],
        {},
        {"config_sourc": {}},
        ['unknown key "config_sourc"; valid keys: region_name, endpoint_url'],
    ),
    (
        "file: unset env var",
        [],
        {},
        {"config_source": {"payload_threshold_bytes": {"env": "TASKIQ_NOT_SET"}}},
        ["key \"config_source.payload_threshold_bytes\": environment variable 'TASKIQ_NOT_SET' is not set"],
    ),
    (
        "file: worker-side knob",
        [],
        {},
        {"config_source": {"heartbeat_interval_seconds": 1}},
        ["worker start --heartbeat-interval"],
    ),
]


@pytest.mark.parametrize(("case", "args", "environ", "config_file", "expected"), WORKER, ids=[c[0] for c in WORKER])
def test_worker_options(env, tmp_path, fault_report, case, args, environ, config_file, expected):
    if config_file is not None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config_file))
        args = [*args, "-y", str(path)]
    result = subprocess.run(
        [sys.executable, "-m", "dagster_taskiq_go", "worker", "start", "-q", "dagster", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, **environ},
    )
    assert result.returncode == 2, result.stderr
    for fragment in expected:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    fault_report(f"worker start: {case}", f"exit 2 naming {expected[0]}", excerpt(result.stderr, expected[0]))


def excerpt(text: str, fragment: str) -> str:
    """The line of text holding fragment, shortened for the report."""
    line = next((line for line in text.splitlines() if fragment in line), fragment)
    start = max(0, line.find(fragment) - 30)
    return ("…" if start else "") + line[start : start + 170].strip()
