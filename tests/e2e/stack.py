"""Helpers that run the product the way a user does: workers from the CLI, runs through `dagster dev`."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from dagster_taskiq_go.dev import free_port, start_worker, stop_process
from dagster_taskiq_go.tags import TASK_ID_TAG

JOBS_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "jobs"))
MONITORING_JOBS = os.path.join(JOBS_DIR, "monitoring_jobs.py")
STEP_START = DagsterEventType.STEP_START
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


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop(0))
        todo += children.get(tree[-1], [])
    return tree


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (VmRSS) or its peak (VmHWM) in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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


def deliver_twice(env: dict[str, str], sqs_queue: str, timeout: float = 120) -> dict:
    """Takes the next message off an SQS queue (its full name without the prefix, e.g. "dagster" or
    "dagster-runs") and puts two copies back with its body and message attributes, as an at-least-once
    queue may deliver it. Returns the original message."""
    sqs, url = aws_client(env, "sqs"), queue_url(env, sqs_queue)

    def receive():
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, MessageAttributeNames=["All"], WaitTimeSeconds=1)
        return got.get("Messages", [None])[0]

    message = wait_for(receive, timeout, f"a message on {sqs_queue}", interval=0)
    attributes = {
        name: {"DataType": a["DataType"], "StringValue": a["StringValue"]}
        for name, a in message.get("MessageAttributes", {}).items()
    }
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=message["Body"], MessageAttributes=attributes)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return message


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
# Run monitoring that resumes a run whose worker died, once; a generous start timeout.
RESUMABLE_MONITORING = {
    "enabled": True,
    "start_timeout_seconds": 180,
    "poll_interval_seconds": 2,
    "max_resume_run_attempts": 1,
}

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


def write_launcher_home(
    home: str,
    run_monitoring: dict | None = None,
    queued: bool = True,
    storage: dict | None = None,
    launcher: bool = True,
) -> str:
    """Creates a DAGSTER_HOME whose dagster.yaml uses TaskiqRunLauncher (transport from the environment)
    and the QueuedRunCoordinator, with optional run_monitoring and storage blocks; returns the home.
    queued=False uses the DefaultRunCoordinator, which launches at once; launcher=False keeps Dagster's
    default launcher (runs in the code server's subprocesses)."""
    import yaml

    os.makedirs(home, exist_ok=True)
    text = LAUNCHER_DAGSTER_YAML if launcher else LAUNCHER_DAGSTER_YAML.split("run_launcher:")[0]
    text += QUEUED_RUN_COORDINATOR if queued else IMMEDIATE_RUN_COORDINATOR
    if storage is not None:
        text += yaml.safe_dump({"storage": storage})
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


class Stack:
    def __init__(self, dev, instance, config, tmp, workers):
        self.dev, self.instance, self.config, self.tmp, self.workers = dev, instance, config, tmp, workers

    def submit(self, job: str, **kwargs) -> str:
        return self.dev.client().submit_job_execution(job, **kwargs)

    def run_task(self, run_id: str) -> str:
        """The run's current task id (the launcher tags the run with it when it submits)."""
        return wait_for(
            lambda: self.instance.get_run_by_id(run_id).tags.get(TASK_ID_TAG), 120, f"run {run_id} to be submitted"
        )

    def running(self, run_id: str, task_id: str, timeout: float = 180) -> dict:
        """Waits for a task of the run to run; fails at once, with the run's errors, if the run ends first."""

        def check():
            record = task_record(self.config, task_id)
            if record and record["state"] == "RUNNING" and record.get("pid"):
                return record
            run = self.instance.get_run_by_id(run_id)
            if run.is_finished:
                raise AssertionError(
                    f"run {run_id} ended {run.status} before task {task_id} ran:\n{self.errors(run_id)}"
                )
            return None

        return wait_for(check, timeout, f"task {task_id} to run")

    def errors(self, run_id: str) -> str:
        """The run's failures and errors, then the workers' logs, for assertion messages."""
        messages = []
        for record in self.instance.get_records_for_run(run_id).records:
            event = record.event_log_entry.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            if error is not None or (event and event.event_type == DagsterEventType.RUN_FAILURE):
                messages.append(f"{record.event_log_entry.user_message}\n{error.to_string() if error else ''}")
        return "\n".join(messages)[-4000:] + "\n" + self.logs()

    def op_started(self, run_id: str, step_key: str) -> None:
        """Waits until the op's body runs (its STEP_START is in the event log)."""

        def check():
            if step_key in {e.dagster_event.step_key for e in step_events(self.instance, run_id, STEP_START)}:
                return True
            if self.instance.get_run_by_id(run_id).is_finished:
                raise AssertionError(f"run {run_id} ended before op {step_key} started:\n{self.errors(run_id)}")
            return False

        wait_for(check, 120, f"op {step_key} to start")

    def finished_record(self, task_id: str) -> dict:
        return wait_for(
            lambda: (r := task_record(self.config, task_id)) and r["state"] not in ("QUEUED", "RUNNING") and r,
            60,
            f"task {task_id} to finish",
        )

    def logs(self) -> str:
        return "\n".join(f"--- worker {name}\n{w.log()[-1500:]}" for name, w in self.workers.items())


@contextmanager
def launcher_stack(
    moto_endpoint,
    tmp_path_factory,
    name,
    queues,
    workers,
    run_monitoring=None,
    jobs=MONITORING_JOBS,
    storage=None,
    launcher=True,
):
    """A DAGSTER_HOME using TaskiqRunLauncher (or, with launcher=False, Dagster's default launcher), its
    queues, workers ({name: (queues, options)}) and `dagster dev` serving jobs. moto_endpoint is what
    every client talks to (moto itself, or a proxy in front of it)."""
    tmp = tmp_path_factory.mktemp(name)
    home = write_launcher_home(str(tmp / "dagster_home"), run_monitoring, storage=storage, launcher=launcher)
    patch = pytest.MonkeyPatch()
    for key, value in transport_env(moto_endpoint, name).items():
        patch.setenv(key, value)
    patch.setenv("TASKIQ_TEST_DIR", str(tmp))
    started, dev, instance = {}, None, None
    try:
        config = create_queues(os.environ, *queues)
        for worker_name, (worker_queues, options) in workers.items():
            started[worker_name] = Worker(worker_name, worker_queues, str(tmp), **options)
        dev = DagsterDev(jobs, home, str(tmp))
        instance = DagsterInstance.from_config(home)
        yield Stack(dev, instance, config, tmp, started)
    finally:
        if instance is not None:
            instance.dispose()
        if dev is not None:
            dev.stop()
        for worker in started.values():
            worker.stop()
        patch.undo()
