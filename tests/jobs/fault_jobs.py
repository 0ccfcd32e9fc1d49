"""Jobs for the fault suite; transport settings come from the environment.

This file is also a probe: importing it inside a worker's task process writes a marker named for the
task into TASKIQ_TEST_DIR, so a test can tell whether a message naming this code was ever run."""

import json
import os

from dagster import Definitions, job, op

from dagster_taskiq_go import taskiq_executor

if os.environ.get("DAGSTER_TASKIQ_TASK_ID"):  # set only in a worker's child process
    marker = "imported-" + os.environ["DAGSTER_TASKIQ_TASK_ID"].replace("/", "_")
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], marker), "w") as f:
        # Task code must not see the signing key: say which of its variables it got.
        json.dump({"pid": os.getpid(), "signing_env": sorted(k for k in os.environ if "SIGNING" in k)}, f)

executor = taskiq_executor.configured(
    {
        "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
        "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
        "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
    }
)


def on(queue: str) -> dict:
    return {"dagster-taskiq/queue": queue}


@op
def hello():
    return "hello"


@job(executor_def=executor)
def ok():
    hello()


# The executor as users configure it in run config (the launchpad), not pre-configured.
@job(executor_def=taskiq_executor)
def run_configured():
    hello()


@op(tags=on("redrive"))
def never_taken():
    return "a worker took it"


@job(executor_def=executor)
def dead_lettered():
    never_taken()


@op(tags=on("sec"))
def probed():
    return "probe ran"


@job(executor_def=executor)
def probe():
    probed()


defs = Definitions(jobs=[ok, run_configured, dead_lettered, probe])
