"""Jobs for the warm step path tests. `warm_helper` is a module beside this file that the tests edit,
to check that a step never runs stale code."""

import json
import os
import time

import warm_helper
from dagster import Definitions, job, op

from dagster_taskiq_go import taskiq_executor

executor = taskiq_executor.configured(
    {name: {"env": f"DAGSTER_TASKIQ_{name.upper()}"} for name in ("s3_bucket", "endpoint_url", "queue_prefix")}
)


@op
def whoami(context) -> int:
    """Records the process that ran it: its pid, parent, session and the helper's value."""
    record = {
        "run_id": context.run_id,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "value": warm_helper.VALUE,
    }
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], "whoami.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    return warm_helper.VALUE


@op
def plus_one(value: int) -> int:
    return value + 1


@job(executor_def=executor)
def probe():
    plus_one(whoami())


@op
def naps(context):
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], "napper.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)


@job(executor_def=executor)
def nap():
    naps()


defs = Definitions(jobs=[probe, nap])
