"""Jobs for the taskiq_executor end-to-end tests; transport settings come from the environment."""

import os
import time

from dagster import (
    Definitions,
    DynamicOut,
    DynamicOutput,
    In,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    job,
    op,
)

from dagster_taskiq_go import taskiq_executor

TRANSPORT = {
    "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
    "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
    "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
}
executor = taskiq_executor.configured(TRANSPORT)


def queue(name: str) -> dict:
    return {"dagster-taskiq/queue": name}


# Routing: step tag > run tag > default_queue.
@op(tags=queue("a"))
def on_a():
    return "a"


@op(tags=queue("b"))
def on_b():
    return "b"


@op
def untagged():
    return "untagged"


@job(executor_def=executor)
def routed():
    on_a()
    on_b()
    untagged()


# Priority: hold keeps the only "prio" slot busy until the test lets it go.
def released(name: str) -> bool:
    return os.path.exists(os.path.join(os.environ["TASKIQ_TEST_DIR"], name))


@op(tags=queue("prio"))
def hold():
    while not released("release-hold"):
        time.sleep(0.1)


@op
def gate():
    return 1


def prio_op(name: str, priority: int | None = None):
    tags = queue("prio")
    if priority is not None:
        tags["dagster-taskiq/priority"] = str(priority)

    @op(name=name, tags=tags, ins={"after": In(Nothing)})
    def _op():
        return name

    return _op


@job(executor_def=executor)
def prioritized():
    hold()
    g = gate()
    for i in range(6):
        prio_op(f"normal_{i}")(after=g)
    prio_op("urgent", 10)(after=g)


# Dagster features that must keep working through the queue.
@op(retry_policy=RetryPolicy(max_retries=1))
def flaky(context: OpExecutionContext):
    if context.retry_number == 0:
        raise Exception("first attempt fails on purpose")
    return "second attempt"


@job(executor_def=executor)
def retried():
    flaky()


@op(out=DynamicOut(int))
def fan():
    for i in range(3):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op
def square(x: int) -> int:
    return x * x


@op
def total(xs: list[int]) -> int:
    return sum(xs)


@job(executor_def=executor)
def dynamic():
    total(fan().map(square).collect())


@op
def top() -> int:
    return 1


@op
def left(x: int) -> int:
    return x + 1


@op
def right(x: int) -> int:
    return x + 2


@op
def bottom(a: int, b: int) -> int:
    return a + b


@job(executor_def=executor)
def diamond():
    t = top()
    bottom(left(t), right(t))


@op(out={"taken": Out(is_required=False), "skipped": Out(is_required=False)})
def branch():
    yield Output(1, "taken")


@op
def after_taken(x):
    return x


@op
def after_skipped(x):
    return x


@job(executor_def=executor)
def optional():
    taken, skipped = branch()
    after_taken(taken)
    after_skipped(skipped)


# Stuck and broken configurations.
@op(tags=queue("nobody"))
def waits_forever():
    return 1


@job(executor_def=taskiq_executor.configured({**TRANSPORT, "config_source": {"max_queue_wait_seconds": 2}}))
def stuck():
    waits_forever()


@job(executor_def=taskiq_executor.configured({**TRANSPORT, "config_source": {"max_wait": 5}}))
def misconfigured():
    top()


@op
def sleeps():
    time.sleep(120)


@job(executor_def=executor)
def sleepy():
    sleeps()


defs = Definitions(jobs=[routed, prioritized, retried, dynamic, diamond, optional, stuck, misconfigured, sleepy])
