"""Host loss: a worker and its whole process tree SIGKILLed at once in the middle of a step. The step's
lease goes stale, Dagster's RetryPolicy relaunches it and another worker runs it; the two attempts
never overlap."""

import os
import signal
import time

from dagster import DagsterRunStatus

from ..e2e.stack import JOBS_DIR, Worker, launcher_stack, process_tree, task_record, wait_for, wait_for_run

FAULT_JOBS = os.path.join(JOBS_DIR, "fault_jobs.py")
HEARTBEAT = ("--heartbeat-interval", "1", "--run-concurrency", "0")


def ran(tmp) -> list[list[str]]:
    path = tmp / "ran"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_host_loss_mid_step_retries_on_another_worker(moto_endpoint, tmp_path_factory, fault_report):
    workers = {"doomed": (["steps"], {"concurrency": 1, "extra": HEARTBEAT})}
    with launcher_stack(
        moto_endpoint, tmp_path_factory, "hostloss", ["dagster", "steps"], workers, jobs=FAULT_JOBS, launcher=False
    ) as stack:
        run_id = stack.submit("host_loss")
        first = wait_for(
            lambda: next((r for r in ran(stack.tmp) if r[:3] == ["start", "survives_host_loss", "0"]), None),
            180,
            "the first attempt to start",
        )
        doomed = stack.workers.pop("doomed")
        tree = process_tree(doomed.proc.pid)
        assert int(first[3]) in tree, (first, tree)
        for pid in tree:  # the host goes away: every process at once, none gets to clean up
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        doomed.proc.wait()
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in tree[1:]), 30, "the tree to be gone")
        stack.workers["rescuer"] = Worker("rescuer", ["steps"], str(stack.tmp), concurrency=1, extra=HEARTBEAT)

        run = wait_for_run(stack.instance, run_id, timeout=280)
        assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run_id)
        lines = ran(stack.tmp)
        starts = [r for r in lines if r[0] == "start"]
        ends = [r for r in lines if r[0] == "end"]
        assert [r[2] for r in starts] == ["0", "1"], lines
        assert [r[2] for r in ends] == ["1"], "the first attempt never finished"
        second_start = float(starts[1][4])
        assert second_start > killed_at, "the retry started before the first attempt was killed"
        lost = task_record(stack.config, f"{run_id}/survives_host_loss/1")
        assert lost["state"] == "FAILED" and lost["reason"].startswith("worker lost: doomed-"), lost
        retried = stack.finished_record(f"{run_id}/survives_host_loss/2")
        assert retried["state"] == "SUCCESS" and retried["worker_id"].startswith("rescuer-"), retried
        fault_report(
            f"worker + its {len(tree) - 1} descendants SIGKILLed at once mid-step",
            "lease goes stale, RetryPolicy reruns the op on another worker, no overlap",
            f"attempt 1 'worker lost'; attempt 2 SUCCESS on rescuer, started {second_start - killed_at:.1f}s "
            "after the kill; 1 unfinished + 1 finished execution, no overlap",
        )
