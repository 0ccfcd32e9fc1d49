"""Regenerates docs/images/ from a real run: moto, two workers, `dagster dev` on examples/s3_project
(TaskiqRunLauncher, taskiq_executor, S3 IO manager), one run of `squares`, and headless Chromium on
its run page, where the engine events name each step's queue, band and worker.

    make screenshots        # or: .venv/bin/python docs/screenshots/take.py

Needs Chromium (`apt-get install chromium` on Debian). Everything it starts stops when it ends.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the e2e helpers start workers and `dagster dev` as the tests do

from dagster import DagsterInstance, DagsterRunStatus  # noqa: E402

from dagster_taskiq_go.dev import local_env, moto_server  # noqa: E402
from tests.e2e.stack import DagsterDev, Worker, create_queues, wait_for_run  # noqa: E402

EXAMPLE = ROOT / "examples" / "s3_project"
IMAGES = ROOT / "docs" / "images"
# The events this picture is about: which worker picked each step up, from which queue.
SHOTS = {"run-page.png": "picked up"}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("take.py: Chromium is needed (Debian: apt-get install chromium)")


def screenshot(browser: str, url: str, out: Path, profile: str) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # running as root in a container
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            "--virtual-time-budget=20000",  # let the UI fetch the run's events before the shot
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> int:
    browser = chromium()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dagster-taskiq-shots-") as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copy(EXAMPLE / "dagster.yaml", home / "dagster.yaml")
        with moto_server(os.path.join(tmp, "moto.log")) as endpoint:
            os.environ.update(local_env(endpoint, str(home)))
            os.environ["DAGSTER_TASKIQ_S3_BUCKET"] = "example-bucket"
            create_queues(os.environ, "dagster", "heavy")
            workers = [
                Worker("main", ["dagster"], tmp),
                Worker("heavy", ["heavy"], tmp, concurrency=1, extra=("--run-concurrency", "0")),
            ]
            dev = DagsterDev(str(EXAMPLE / "definitions.py"), str(home), tmp)
            try:
                run_id = dev.client().submit_job_execution("squares")
                with DagsterInstance.from_config(str(home)) as instance:
                    run = wait_for_run(instance, run_id)
                if run.status != DagsterRunStatus.SUCCESS:
                    print(f"take.py: run {run_id} ended {run.status}; see {tmp}", file=sys.stderr)
                    return 1
                dev.client()._execute("mutation { setNuxSeen }")  # no first-visit community dialog
                for name, logs in SHOTS.items():
                    url = f"http://127.0.0.1:{dev.port}/runs/{run_id}?logs={logs}"
                    screenshot(browser, url, IMAGES / name, os.path.join(tmp, "chromium"))
                    print(f"wrote {(IMAGES / name).relative_to(ROOT)}")
            finally:
                dev.stop()
                for worker in workers:
                    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
