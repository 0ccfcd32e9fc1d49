"""Launches the ``launch_probe`` job through the instance's run launcher, COUNT times, one at a time.

    python bench/launch_run.py COUNT

Loads bench/bench_jobs.py as a code location in a code server (as ``dagster dev`` and the daemon do:
Dagster's DefaultRunLauncher can only launch runs of a code location served over gRPC), waits until
it is loaded, then for each run: creates it, calls ``instance.launch_run`` (which records the
``RUN_STARTING`` event, then calls the configured run launcher) and waits for the run to finish, so
one run's start-up never overlaps the next one's. The coordinator is bypassed on purpose: a
QueuedRunCoordinator's dequeue interval would be measured, not the launcher. Prints one JSON line
with the run ids; exits 1 if a run did not finish.
"""

import json
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
JOBS_FILE = os.path.join(BENCH_DIR, "bench_jobs.py")
JOB = "launch_probe"
RUN_TIMEOUT_S = 300


def main(argv: list[str]) -> int:
    (count,) = argv
    from dagster import DagsterInstance
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import (
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
    )
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import PythonFileTarget

    target = PythonFileTarget(JOBS_FILE, attribute=None, working_directory=BENCH_DIR, location_name="bench")
    run_ids = []
    with DagsterInstance.get() as instance, WorkspaceProcessContext(instance, target) as context:
        workspace = context.create_request_context()
        location = get_code_location_from_workspace(workspace, "bench")
        repo = get_remote_repository_from_code_location(location, None)
        remote_job = get_remote_job_from_remote_repo(repo, JOB)
        for _ in range(int(count)):
            run = _create_run(
                instance=instance,
                code_location=location,
                remote_repo=repo,
                remote_job=remote_job,
                run_config={},
                tags=None,
                op_selection=None,
                run_id=None,
            )
            instance.launch_run(run.run_id, workspace)
            run_ids.append(run.run_id)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while not instance.get_run_by_id(run.run_id).is_finished:
                if time.monotonic() > deadline:
                    print(json.dumps({"run_ids": run_ids, "timed_out": run.run_id}), flush=True)
                    return 1
                time.sleep(0.2)
    print(json.dumps({"run_ids": run_ids}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
