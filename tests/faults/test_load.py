"""Load: many short steps over two runs and four worker processes with two slots each. Every step
succeeds exactly once; step throughput and peak worker memory go into the table.
FAULT_LOAD_STEPS sets the number of steps (`make test-load` runs 500)."""

import os
import threading
from collections import Counter

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from ..e2e.stack import JOBS_DIR, STEP_START, launcher_stack, process_tree, rss_kib, step_events, wait_for_run

FAULT_JOBS = os.path.join(JOBS_DIR, "fault_jobs.py")
STEPS = int(os.environ.get("FAULT_LOAD_STEPS", "100"))
RUNS, WORKERS, SLOTS = 2, 4, 2


@pytest.mark.timeout(3600)
def test_load(moto_endpoint, tmp_path_factory, fault_report):
    assert STEPS % RUNS == 0 and STEPS // RUNS >= 2, "FAULT_LOAD_STEPS must be an even number >= 4"
    workers = {
        f"load{i}": (["steps"], {"concurrency": SLOTS, "extra": ("--run-concurrency", "0")}) for i in range(WORKERS)
    }
    with launcher_stack(
        moto_endpoint, tmp_path_factory, "load", ["dagster", "steps"], workers, jobs=FAULT_JOBS, launcher=False
    ) as stack:
        pids = [w.proc.pid for w in stack.workers.values()]
        peak_tree = [0]
        done = threading.Event()

        def sample():  # a worker's tree: the worker and the step processes it runs
            while not done.wait(0.5):
                for pid in pids:
                    peak_tree[0] = max(peak_tree[0], sum(rss_kib(p) for p in process_tree(pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Each run: one step that fans out, and STEPS / RUNS - 1 mapped steps.
        width = STEPS // RUNS - 1
        run_ids = [
            stack.submit("fanout", run_config={"ops": {"spread": {"config": {"width": width}}}}) for _ in range(RUNS)
        ]
        try:
            runs = [wait_for_run(stack.instance, run_id, timeout=3000) for run_id in run_ids]
        finally:
            done.set()
            sampler.join()
        for run in runs:
            assert run.status == DagsterRunStatus.SUCCESS, stack.errors(run.run_id)
        peak_worker = max(rss_kib(pid, "VmHWM") for pid in pids)

        starts, successes = [], []
        for run_id in run_ids:
            started = step_events(stack.instance, run_id, STEP_START)
            succeeded = step_events(stack.instance, run_id, DagsterEventType.STEP_SUCCESS)
            per_step = Counter(e.dagster_event.step_key for e in started)
            assert len(per_step) == STEPS // RUNS and set(per_step.values()) == {1}, per_step
            assert len(succeeded) == STEPS // RUNS
            starts += [e.timestamp for e in started]
            successes += [e.timestamp for e in succeeded]
        executed = Counter(line.split()[1] for line in (stack.tmp / "ran").read_text().splitlines())
        assert len(executed) == RUNS * width and set(executed.values()) == {1}, executed.most_common(3)
        spread = max(successes) - min(starts)
        fault_report(
            f"{STEPS} steps, {RUNS} runs, {WORKERS} workers x {SLOTS} slots",
            "every step succeeds exactly once",
            f"{STEPS}/{STEPS} succeeded once; {STEPS / spread:.2f} steps/s over {spread:.0f}s; peak RSS: "
            f"worker process {peak_worker / 1024:.0f} MiB, worker + its steps {peak_tree[0] / 1024:.0f} MiB",
        )
