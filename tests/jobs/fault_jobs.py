"""Jobs for the fault suite; transport settings come from the environment.

Ops append "<op or step> <retry> <pid> <start> <end>" to $TASKIQ_TEST_DIR/ran when they finish, and a
"start" line when they begin, so tests can count executions and check that none overlapped.

This file is also a probe: importing it inside a worker's task process writes a marker named for the
task into TASKIQ_TEST_DIR, so a test can tell whether a message naming this code was ever run."""

import json
import os
import time

from dagster import (
    Config,
    Definitions,
    DynamicOut,
    DynamicOutput,
    In,
    Nothing,
    OpExecutionContext,
    RetryPolicy,
    job,
    op,
)

from dagster_taskiq_go import taskiq_executor

if os.environ.get("DAGSTER_TASKIQ_TASK_ID"):  # set only in a worker's child process
    marker = "imported-" + os.environ["DAGSTER_TASKIQ_TASK_ID"].replace("/", "_")
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], marker), "w") as f:
        # Task code must not see the signing key: say which of its variables it got.
        json.dump({"pid": os.getpid(), "signing_env": sorted(k for k in os.environ if "SIGNING" in k)}, f)

TRANSPORT = {
    "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
    "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
    "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
}
executor = taskiq_executor.configured(TRANSPORT)
STEPS = {"dagster-taskiq/queue": "steps"}


def on(queue: str) -> dict:
    return {"dagster-taskiq/queue": queue}


def note(line: str) -> None:
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], "ran"), "a") as f:
        f.write(line + "\n")


class Sleep(Config):
    seconds: float = 20


def timed(context: OpExecutionContext, seconds: float) -> None:
    key, retry, start = context.op_handle.name, context.retry_number, time.time()
    note(f"start {key} {retry} {os.getpid()} {start:.3f}")
    time.sleep(seconds)
    note(f"end {key} {retry} {os.getpid()} {start:.3f} {time.time():.3f}")


# One slow step: longer than its queue's visibility timeout, or outlasting an outage.
@op(tags=STEPS)
def slow(context: OpExecutionContext, config: Sleep):
    timed(context, config.seconds)


@op(tags=STEPS, ins={"after": In(Nothing)})
def then_quick():
    note(f"end then_quick 0 {os.getpid()}")


@job(executor_def=executor)
def one_slow():
    then_quick(after=slow())


# Host loss: the first attempt runs until its worker's host is killed; the retry is quick.
@op(tags=STEPS, retry_policy=RetryPolicy(max_retries=1))
def survives_host_loss(context: OpExecutionContext):
    timed(context, 300 if context.retry_number == 0 else 1)


@job(executor_def=executor)
def host_loss():
    survives_host_loss()


# Load: a fan-out of many short steps.
class Width(Config):
    width: int = 49


@op(out=DynamicOut(int), tags=STEPS)
def spread(config: Width):
    for i in range(config.width):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(tags=STEPS)
def unit(context: OpExecutionContext, i: int) -> int:
    note(f"end {context.run_id}/{context.op_handle.name}[{context.get_mapping_key()}] {context.retry_number}")
    return i


@job(executor_def=executor)
def fanout():
    spread().map(unit)


# Oversized payload: every step's args exceed a 1 KiB threshold and travel through S3.
@op(tags=STEPS)
def small():
    note(f"end small 0 {os.getpid()}")
    return 1


@job(executor_def=taskiq_executor.configured({**TRANSPORT, "config_source": {"payload_threshold_bytes": 1024}}))
def offloaded():
    small()


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


defs = Definitions(jobs=[ok, run_configured, dead_lettered, probe, one_slow, host_loss, fanout, offloaded])
