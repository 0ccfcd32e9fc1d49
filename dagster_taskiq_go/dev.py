"""``dagster-taskiq-go dev``: a local SQS+S3 endpoint (moto), workers and an example run, in one command."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager

DEMO_FILE = os.path.join("examples", "fanout", "definitions.py")
DEMO_JOB = "fanout"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(log_path: str):
    """Runs moto's server (SQS and S3 on one port) on a free loopback port; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log_path}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def local_env(endpoint: str, dagster_home: str) -> dict[str, str]:
    """Environment for talking to a local endpoint: dummy credentials, a fresh signing key."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "DAGSTER_TASKIQ_ENDPOINT_URL": endpoint,
        "DAGSTER_TASKIQ_S3_BUCKET": "dagster-taskiq-dev",
        "DAGSTER_TASKIQ_SIGNING_KEY": secrets.token_hex(32),
        "DAGSTER_HOME": dagster_home,
    }


def start_worker(name: str, queues: list[str], concurrency: int, log_path: str, extra: list[str] = ()):
    cmd = [
        sys.executable,
        "-m",
        "dagster_taskiq_go",
        "worker",
        "start",
        "--name",
        name,
        "--concurrency",
        str(concurrency),
        *[a for q in queues for a in ("-q", q)],
        *extra,
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def step_workers(instance, run_id: str) -> dict[str, str]:
    """Maps each step of a run to the worker that ran it, from the run's engine events."""
    from dagster import DagsterEventType

    workers = {}
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        if data and "worker_id" in data.metadata and event.step_key:
            workers[event.step_key] = data.metadata["worker_id"].value
    return workers


def run_dev(workers: int, keep_running: bool) -> int:
    if not os.path.exists(DEMO_FILE):
        print(f"dev: run it from the project's root ({DEMO_FILE} not found)", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dagster-taskiq-dev-"))
        home = os.path.join(tmp, "dagster_home")
        os.makedirs(home)
        print("» starting moto (local SQS + S3)", flush=True)
        endpoint = stack.enter_context(moto_server(os.path.join(tmp, "moto.log")))
        os.environ.update(local_env(endpoint, home))
        print(f"  endpoint {endpoint}; DAGSTER_HOME {home}", flush=True)

        from dagster_taskiq_go._pyshim import call
        from dagster_taskiq_go.cli import _core_config

        core = _core_config({"s3_bucket": os.environ["DAGSTER_TASKIQ_S3_BUCKET"], "endpoint_url": endpoint})
        print("» creating queue 'dagster' and its dead-letter queue", flush=True)
        call("QueueCreate", core, "dagster", "high,normal,low")

        print(f"» starting {workers} workers", flush=True)
        procs = [
            start_worker(f"demo-{i + 1}", ["dagster"], 2, os.path.join(tmp, f"worker-{i + 1}.log"))
            for i in range(workers)
        ]
        for proc in procs:
            stack.callback(stop_process, proc)

        from dagster import DagsterInstance, execute_job
        from dagster._core.definitions.reconstruct import ReconstructableJob

        print(f"» running job '{DEMO_JOB}' from {DEMO_FILE} with taskiq_executor", flush=True)
        started = time.monotonic()
        with DagsterInstance.get() as instance:
            result = execute_job(
                ReconstructableJob.for_file(os.path.abspath(DEMO_FILE), DEMO_JOB),
                instance,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            )
            elapsed = time.monotonic() - started
            ran_on = step_workers(instance, result.run_id)
        for step_key in sorted(ran_on):
            print(f"  {step_key:<24} ran on {ran_on[step_key]}")
        status = "SUCCESS" if result.success else "FAILURE"
        print(
            f"» run {result.run_id}: {status} in {elapsed:.1f}s "
            f"({len(ran_on)} steps on {len(set(ran_on.values()))} workers)",
            flush=True,
        )
        if keep_running:
            print("» workers and moto keep running; Ctrl-C to stop", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        print("» shutting down", flush=True)
        return 0 if result.success else 1
