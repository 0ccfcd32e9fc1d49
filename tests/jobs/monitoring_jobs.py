"""Jobs for the run launcher and run monitoring end-to-end tests; transport settings come from the
environment. Ops that must run exactly once append their name to $TASKIQ_TEST_DIR/ran."""

import os
import time

from dagster import Definitions, In, Nothing, in_process_executor, job, op

from dagster_taskiq_go import taskiq_executor

executor = taskiq_executor.configured(
    {
        "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
        "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
        "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
    }
)
STEPS = {"dagster-taskiq/queue": "steps"}


def record_run(name: str) -> None:
    with open(os.path.join(os.environ["TASKIQ_TEST_DIR"], "ran"), "a") as f:
        f.write(f"{name} {os.getpid()}\n")


# Runs whose steps also need the worker's only step slot while the run holds its run slot.
@op
def first() -> int:
    return 1


@op
def second(x: int) -> int:
    return x + 1


@job(executor_def=executor)
def two_steps():
    second(first())


# Whole runs in the run worker's process.
@op
def say_hello() -> str:
    return "hello"


@job(executor_def=in_process_executor)
def hello():
    say_hello()


@op
def nap():
    time.sleep(180)


@job(executor_def=in_process_executor)
def napping():
    nap()


# Resume: the run worker dies while slow_first runs on the steps worker.
@op(tags=STEPS)
def slow_first():
    record_run("slow_first")
    time.sleep(20)


@op(tags=STEPS, ins={"after": In(Nothing)})
def then_second():
    record_run("then_second")


@job(executor_def=executor)
def resumable():
    then_second(after=slow_first())


@op(tags=STEPS)
def sleeps():
    time.sleep(180)


@job(executor_def=executor)
def sleepy_step():
    sleeps()


defs = Definitions(jobs=[two_steps, hello, napping, resumable, sleepy_step])
