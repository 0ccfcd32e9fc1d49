"""Helpers that run the product the way a user does: workers from the CLI, runs through `dagster dev`."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from dagster_taskiq_go.dev import free_port, start_worker, stop_process

FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Worker:
    """A `dagster-taskiq-go worker start` process, stopped by PID."""

    def __init__(self, name: str, queues: list[str], log_dir: str, concurrency: int = 2, extra: tuple = ()):
        self.log_path = os.path.join(log_dir, f"worker-{name}.log")
        self.proc = start_worker(name, queues, concurrency, self.log_path, ["--poll-wait", "2", *extra])
        wait_for(lambda: self.proc.poll() is not None or "worker started" in self.log(), 60, f"worker {name}")
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 60) -> int:
        return stop_process(self.proc, timeout)


def dagster_home(tmp, dagster_yaml: str = "telemetry:\n  enabled: false\n") -> str:
    """A DAGSTER_HOME under tmp holding dagster_yaml."""
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml)
    return str(home)


class DagsterDev:
    """`dagster dev` on a free loopback port: webserver, daemon and code server, as users run them."""

    def __init__(self, python_file: str, dagster_home: str, log_dir: str, working_directory: str | None = None):
        self.port = free_port()
        self.log_path = os.path.join(log_dir, "dagster-dev.log")
        command = [sys.executable, "-m", "dagster", "dev", "-f", python_file, "-h", "127.0.0.1", "-p", str(self.port)]
        if working_directory:
            command += ["-d", working_directory]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, DAGSTER_HOME=dagster_home),
                start_new_session=True,  # its webserver, daemon and code server share our process group
            )
        wait_for(self._ready, 180, "dagster dev to serve GraphQL", interval=1)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dagster dev exited early:\n{open(self.log_path).read()[-4000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=2).close()
            return True
        except OSError:
            return False

    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def terminate(self, run_id: str, force: bool = False) -> str:
        """Terminates a run as the UI's Terminate button does; force is its "mark canceled immediately"
        choice, the only one the UI offers for a run that is still STARTING."""
        result = self.client()._execute(
            """mutation Terminate($runId: String!, $policy: TerminateRunPolicy) {
                 terminateRun(runId: $runId, terminatePolicy: $policy) {
                   __typename
                   ... on TerminateRunFailure { message }
                   ... on PythonError { message }
                 }
               }""",
            {"runId": run_id, "policy": "MARK_AS_CANCELED_IMMEDIATELY" if force else "SAFE_TERMINATE"},
        )["terminateRun"]
        assert result["__typename"] == "TerminateRunSuccess", result
        return result["__typename"]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def transport_env(moto_endpoint: str, name: str) -> dict[str, str]:
    """Environment for one test module's stack: its own bucket and queue prefix."""
    import uuid

    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "DAGSTER_TASKIQ_ENDPOINT_URL": moto_endpoint,
        "DAGSTER_TASKIQ_S3_BUCKET": f"{name}-{uuid.uuid4().hex[:8]}",
        "DAGSTER_TASKIQ_QUEUE_PREFIX": f"{name[:4]}{uuid.uuid4().hex[:6]}-",
        "DAGSTER_TASKIQ_SIGNING_KEY": f"{name}-signing-key-0123456789",
    }


def create_queues(env: dict[str, str], *queues: str) -> str:
    """Creates the bucket and queues (all three bands) and returns the core config JSON."""
    from dagster_taskiq_go._pyshim import call
    from dagster_taskiq_go.config import core_config_json

    config = {"s3_bucket": env["DAGSTER_TASKIQ_S3_BUCKET"], "endpoint_url": env["DAGSTER_TASKIQ_ENDPOINT_URL"]}
    if "DAGSTER_TASKIQ_QUEUE_PREFIX" in env:  # absent: the default prefix
        config["queue_prefix"] = env["DAGSTER_TASKIQ_QUEUE_PREFIX"]
    config = core_config_json(config)
    for queue in queues:
        call("QueueCreate", config, queue, "high,normal,low")
    return config


def aws_client(env: dict[str, str], service: str):
    """A boto3 client ("sqs" or "s3") for the stack's endpoint: what an operator's tools would use."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=env["DAGSTER_TASKIQ_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def queue_url(env: dict[str, str], sqs_name: str) -> str:
    """The URL of an SQS queue named without the stack's prefix ("dagster", "dagster-runs", "dagster-dlq")."""
    return aws_client(env, "sqs").get_queue_url(QueueName=env["DAGSTER_TASKIQ_QUEUE_PREFIX"] + sqs_name)["QueueUrl"]


def shorten_visibility(env: dict[str, str], queue: str, seconds: int) -> None:
    """Sets the visibility timeout of a queue's normal band, so a test can watch a redelivery."""
    aws_client(env, "sqs").set_queue_attributes(
        QueueUrl=queue_url(env, queue), Attributes={"VisibilityTimeout": str(seconds)}
    )


def execute_job(python_file: str, job: str, dagster_home: str, log_path: str) -> subprocess.Popen:
    """`dagster job execute`: a run of the job in a process of its own, which is its run worker (the
    executor submits the steps and checks their health there)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "job", "execute", "-f", python_file, "-j", job],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, DAGSTER_HOME=dagster_home),
        )


def only_run(instance: DagsterInstance, job: str, timeout: float = 120):
    """The one run of a job in the instance, once it exists."""
    return wait_for(lambda: (runs := instance.get_runs()) and [r for r in runs if r.job_name == job], timeout, job)[0]


def wait_for_run(instance: DagsterInstance, run_id: str, timeout: float = 240):
    return wait_for(
        lambda: (run := instance.get_run_by_id(run_id)) and run.status in FINISHED and run,
        timeout,
        f"run {run_id} to finish",
    )


def step_events(instance: DagsterInstance, run_id: str, event_type: DagsterEventType):
    return [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=event_type).records]


QUEUED_RUN_COORDINATOR = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""
# Launches in the submitting process (Dagster's default is the queued one).
IMMEDIATE_RUN_COORDINATOR = """
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""
LAUNCHER_DAGSTER_YAML = """
telemetry:
  enabled: false
run_launcher:
  module: dagster_taskiq_go
  class: TaskiqRunLauncher
  config:
    s3_bucket: {env: DAGSTER_TASKIQ_S3_BUCKET}
    endpoint_url: {env: DAGSTER_TASKIQ_ENDPOINT_URL}
    queue_prefix: {env: DAGSTER_TASKIQ_QUEUE_PREFIX}
"""


def write_launcher_home(home: str, run_monitoring: dict | None = None, queued: bool = True) -> str:
    """Creates a DAGSTER_HOME whose dagster.yaml uses TaskiqRunLauncher (transport from the environment)
    and the QueuedRunCoordinator (queued=False: the DefaultRunCoordinator, which launches at once),
    with an optional run_monitoring block; returns the home."""
    import yaml

    os.makedirs(home, exist_ok=True)
    text = LAUNCHER_DAGSTER_YAML + (QUEUED_RUN_COORDINATOR if queued else IMMEDIATE_RUN_COORDINATOR)
    if run_monitoring is not None:
        text += yaml.safe_dump({"run_monitoring": run_monitoring})
    with open(os.path.join(home, "dagster.yaml"), "w") as f:
        f.write(text)
    return home


def task_record(config: str, task_id: str) -> dict | None:
    """A task's S3 record, or None while it has none (or the read failed)."""
    from dagster_taskiq_go._pyshim import call_json

    try:
        return call_json("TaskStatus", config, task_id)
    except Exception:
        return None
