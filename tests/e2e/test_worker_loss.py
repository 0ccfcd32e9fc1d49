"""A worker killed with SIGKILL: its child dies with it, the task's lease goes stale and its record
becomes FAILED ("worker lost"), and no other worker runs the task again from the queue."""

import json
import os
import signal
import time

import pytest

from dagster_taskiq_go._pyshim import call_json

from .stack import Worker, create_queues, shorten_visibility, transport_env, wait_for

pytestmark = pytest.mark.e2e


def test_kill_9_of_a_worker(moto_endpoint, tmp_path):
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "loss").items():
        patch.setenv(name, value)
    try:
        config = create_queues(os.environ, "dagster")
        shorten_visibility(os.environ, "dagster", seconds=3)
        # A stand-in task interpreter that records each start and then sleeps (cold: it cannot be a step server).
        fake = tmp_path / "fake-python"
        fake.write_text(f"#!/bin/sh\necho $$ >> {tmp_path}/runs\nexec sleep 300\n")
        fake.chmod(0o755)
        extra = ("--heartbeat-interval", "1", "--python", str(fake), "--step-process", "cold")
        doomed = Worker("doomed", ["dagster"], str(tmp_path), extra=extra)
        request = {"kind": "execute_step", "run_id": "run-x", "step_key": "s", "attempt": 1, "args": "a"}
        task_id = call_json("Submit", config, json.dumps(request))["task_id"]
        record = wait_for(
            lambda: (r := call_json("TaskStatus", config, task_id))["state"] == "RUNNING" and r, 60, "task RUNNING"
        )
        child = record["pid"]
        assert os.path.exists(f"/proc/{child}")

        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait()
        killed_at = time.monotonic()
        wait_for(lambda: not os.path.exists(f"/proc/{child}"), 10, "the child to die with its worker", interval=0.1)
        print(f"child gone {time.monotonic() - killed_at:.2f}s after its worker's SIGKILL")

        verdict = wait_for(
            lambda: (v := call_json("TaskHealth", config, task_id))["status"] != "RUNNING" and v, 60, "a stale lease"
        )
        print(f"task judged lost {time.monotonic() - killed_at:.1f}s after the SIGKILL (heartbeat 1s)")
        assert verdict["status"] == "FAILED" and not verdict["healthy"]
        assert verdict["reason"].startswith("worker lost: doomed-"), verdict["reason"]
        assert call_json("TaskStatus", config, task_id)["state"] == "FAILED"

        # A healthy worker on the same queue never runs it again. The message was deleted after the claim,
        # or, if the SIGKILL beat that delete, it comes back after the (shortened) visibility timeout and
        # the claim refuses it: either way the queue drains without a second start.
        rescuer = Worker("rescuer", ["dagster"], str(tmp_path), extra=("--python", str(fake), "--step-process", "cold"))
        try:

            def drained():
                bands = call_json("QueueStats", config, "dagster")["bands"]
                return all(b["visible"] == 0 and b["in_flight"] == 0 for b in bands)

            wait_for(drained, 60, "the task's message to be deleted or refused")
            refused = "duplicate delivery" in rescuer.log()
            print("redelivered and refused by the claim" if refused else "deleted after the claim")
            assert "task started" not in rescuer.log()
        finally:
            rescuer.stop()
        assert len((tmp_path / "runs").read_text().split()) == 1
    finally:
        patch.undo()
