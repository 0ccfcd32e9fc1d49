"""SQS and S3 unreachable for 10 s (moto keeps its state): every client talks to moto through a proxy
that cuts them off. Submissions retry and succeed, or fail past aws_retry_max_seconds naming the
endpoint; a run with run monitoring rides out an outage in the middle of a step."""

import json
import os
import threading
import time
from collections import Counter

import pytest
from dagster import DagsterRunStatus

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go._pyshim.errors import TaskiqTransportError
from dagster_taskiq_go.config import core_config_json
from dagster_taskiq_go.tags import TASK_ID_TAG

from ..e2e.stack import (
    JOBS_DIR,
    RESUMABLE_MONITORING,
    create_queues,
    launcher_stack,
    task_record,
    transport_env,
    wait_for,
    wait_for_run,
)
from ..proxy import FaultProxy

OUTAGE_SECONDS = 10
FAULT_JOBS = os.path.join(JOBS_DIR, "fault_jobs.py")
ROUTE = "dagster-taskiq/queue"
HEARTBEAT = ("--heartbeat-interval", "2")  # a 6 s lease: it expires during the outage


@pytest.fixture(scope="module")
def proxy(moto_endpoint):
    with FaultProxy(int(moto_endpoint.rsplit(":", 1)[1])) as p:
        yield p


def ran_lines(tmp) -> list[list[str]]:
    path = tmp / "ran"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_submission_retries_through_an_outage_and_fails_past_the_limit(proxy, fault_report):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(proxy.endpoint, "outsub").items():
        patch.setenv(name, value)
    try:
        config = create_queues(os.environ, "dagster")
        request = {"kind": "execute_step", "run_id": "run-o", "step_key": "s", "attempt": 1, "args": "a"}

        proxy.outage("drop")
        restore = threading.Timer(OUTAGE_SECONDS, proxy.restore)
        restore.start()
        start = time.monotonic()
        try:
            task_id = call_json("Submit", config, json.dumps(request))["task_id"]
        finally:
            restore.join()
        took = time.monotonic() - start
        turned_away = proxy.refused(start, start + took)
        assert turned_away > 0, "the submission never met the outage"
        assert took >= OUTAGE_SECONDS - 0.5, f"a submission succeeded {took:.1f}s into a {OUTAGE_SECONDS}s outage"
        assert call_json("TaskStatus", config, task_id)["state"] == "QUEUED"
        bands = call_json("QueueStats", config, "dagster")["bands"]
        assert sum(b["visible"] for b in bands) == 1, bands
        fault_report(
            f"SQS/S3 connections reset for {OUTAGE_SECONDS}s during a submission",
            "submission retries with backoff and succeeds after the outage; one message queued",
            f"succeeded {took:.1f}s after it began, {turned_away} connections turned away; 1 message queued",
        )

        limited = core_config_json({**json.loads(config), "aws_retry_max_seconds": 3})
        request["step_key"] = "t"
        proxy.outage("refuse")
        start = time.monotonic()
        try:
            with pytest.raises(TaskiqTransportError) as failed:
                call_json("Submit", limited, json.dumps(request))
        finally:
            proxy.restore()
        took = time.monotonic() - start
        message = str(failed.value)
        assert took >= 3, f"gave up after {took:.1f}s, before aws_retry_max_seconds=3"
        assert proxy.endpoint in message and "aws_retry_max_seconds=3" in message, message
        assert "connection refused" in message, message
        fault_report(
            "SQS/S3 refusing connections, aws_retry_max_seconds=3",
            "submission fails past the limit, naming the endpoint and the limit",
            f"failed after {took:.1f}s: ...{message[message.index('to http') :][:95]}",
        )
    finally:
        patch.undo()


class LeaseWatch:
    """Reads task records straight from moto (not through the proxy) while the outage lasts, and
    measures how long each lease stayed expired and when it was renewed after the outage."""

    def __init__(self, config: str, task_ids: list[str]):
        self.config, self.task_ids = config, task_ids
        self.expired_for = dict.fromkeys(task_ids, 0.0)
        self.renewed_after: dict[str, float] = {}
        self._stop = threading.Event()
        self._restored: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def restored(self) -> None:
        self._restored = time.time()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def renewed(self) -> bool:
        """Whether every lease was renewed after the outage; fails at once if a task was judged lost."""
        for task_id in self.task_ids:
            record = task_record(self.config, task_id) or {}
            assert record.get("state") != "FAILED", f"task {task_id} failed after the outage: {record.get('reason')}"
        return len(self.renewed_after) == len(self.task_ids)

    def _watch(self) -> None:
        from datetime import datetime

        while not self._stop.is_set():
            now = time.time()
            for task_id in self.task_ids:
                record = task_record(self.config, task_id)
                if not record or record["state"] != "RUNNING" or not record.get("lease_until"):
                    continue
                lease = datetime.fromisoformat(record["lease_until"].replace("Z", "+00:00")).timestamp()
                if now > lease:
                    self.expired_for[task_id] = max(self.expired_for[task_id], now - lease)
                elif self._restored is not None and task_id not in self.renewed_after and lease > self._restored:
                    self.renewed_after[task_id] = now - self._restored
            time.sleep(0.25)


@pytest.fixture(scope="module")
def monitored(proxy, tmp_path_factory):
    """TaskiqRunLauncher with run monitoring (one resume allowed), every client behind the proxy."""
    workers = {
        "steps": (["steps"], {"concurrency": 1, "extra": (*HEARTBEAT, "--run-concurrency", "0")}),
        "runner": (["runs"], {"concurrency": 1, "extra": HEARTBEAT}),
    }
    queues = ["dagster", "runs", "steps"]
    with launcher_stack(
        proxy.endpoint, tmp_path_factory, "outrun", queues, workers, RESUMABLE_MONITORING, jobs=FAULT_JOBS
    ) as stack:
        yield stack


def test_outage_during_a_step_with_run_monitoring(proxy, monitored, moto_endpoint, fault_report):
    stack = monitored
    run_id = stack.submit("one_slow", run_config={"ops": {"slow": {"config": {"seconds": 40}}}}, tags={ROUTE: "runs"})
    run_task, step_task = f"{run_id}/execute", f"{run_id}/slow/1"
    stack.running(run_id, step_task)
    wait_for(lambda: any(r[:2] == ["start", "slow"] for r in ran_lines(stack.tmp)), 120, "op slow to start")
    direct = core_config_json({**json.loads(stack.config), "endpoint_url": moto_endpoint})

    renewal_failures_before = {n: w.log().count("lease renewal failed") for n, w in stack.workers.items()}
    with LeaseWatch(direct, [run_task, step_task]) as watch:
        time.sleep(4)  # both leases renewed at least once before the cut
        proxy.outage("refuse")
        time.sleep(OUTAGE_SECONDS)
        proxy.restore()
        watch.restored()
        wait_for(lambda: watch.renewed(), 60, "both leases to be renewed after the outage")

    run = wait_for_run(stack.instance, run_id)
    assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
    assert run.tags[TASK_ID_TAG] == run_task, "the run was resumed"
    assert task_record(stack.config, f"{run_id}/resume/1") is None
    assert task_record(stack.config, f"{run_id}/slow/2") is None, "the step was relaunched"
    assert stack.finished_record(run_task)["state"] == "SUCCESS"
    assert task_record(stack.config, step_task)["state"] == "SUCCESS"
    ran = Counter((r[0], r[1]) for r in ran_lines(stack.tmp))
    assert ran == {("start", "slow"): 1, ("end", "slow"): 1, ("end", "then_quick"): 1}, ran
    failures = sum(w.log().count("lease renewal failed") for w in stack.workers.values()) - sum(
        renewal_failures_before.values()
    )
    assert max(watch.expired_for.values()) > 0, "no lease expired: the outage tested nothing"
    fault_report(
        f"SQS/S3 refused for {OUTAGE_SECONDS}s mid-step (launcher + executor, run monitoring, 2 s heartbeat)",
        "run SUCCESS, no resume, no step relaunch; workers renew leases and go on",
        f"run SUCCESS, no resume/relaunch; leases expired up to {max(watch.expired_for.values()):.1f}s, "
        f"renewed {max(watch.renewed_after.values()):.1f}s after the outage; {failures} renewal failures logged",
    )
