"""Runs one benchmark job in this process, the same way for every executor.

    python bench/launch.py JOB_NAME RUN_CONFIG_JSON TOKEN

Uses ``DagsterInstance.get()`` (DAGSTER_HOME from the environment) and ``dagster.execute_job`` on a
``ReconstructableJob`` of bench/bench_jobs.py. The run is tagged ``bench/token=TOKEN`` so the harness
can find it while it is running. SIGINT is captured the way ``dagster api execute_run`` captures it,
so the harness can terminate the run as a run launcher does: the executor sees the interrupt at its
next check and terminates its steps. Exits 0 if the run succeeded, 1 if it did not.
"""

import json
import os
import sys

JOBS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_jobs.py")


def main(argv: list[str]) -> int:
    job_name, run_config_json, token = argv
    from dagster import DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._utils.interrupts import capture_interrupts

    with DagsterInstance.get() as instance:
        with capture_interrupts():
            result = execute_job(
                ReconstructableJob.for_file(JOBS_FILE, job_name),
                instance,
                run_config=json.loads(run_config_json),
                tags={"bench/token": token},
                raise_on_error=False,
            )
        print(json.dumps({"run_id": result.run_id, "success": result.success}), flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
