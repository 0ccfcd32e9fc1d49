"""A fan-out job (1 → 10 → 1) whose steps run on dagster-taskiq-go workers."""

from dagster import Definitions, In, OpExecutionContext, job, op

from dagster_taskiq_go import taskiq_executor

WIDTH = 10


@op
def start() -> int:
    return WIDTH


def make_branch(i: int):
    @op(name=f"branch_{i}")
    def branch(context: OpExecutionContext, width: int) -> int:
        context.log.info(f"branch {i} of {width}")
        return i * i

    return branch


@op(ins={f"in_{i}": In(int) for i in range(WIDTH)})
def gather(**values: int) -> int:
    return sum(values.values())


@job(
    executor_def=taskiq_executor.configured(
        {"s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"}, "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"}}
    )
)
def fanout():
    width = start()
    gather(**{f"in_{i}": make_branch(i)(width) for i in range(WIDTH)})


defs = Definitions(jobs=[fanout])
