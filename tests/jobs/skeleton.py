"""Jobs for the end-to-end tests; they read their transport settings from the environment."""

from dagster import Definitions, In, OpExecutionContext, job, op

from dagster_taskiq_go import taskiq_executor

executor = taskiq_executor.configured(
    {
        "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
        "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
        "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
    }
)
WIDTH = 10


@op
def start() -> int:
    return WIDTH


def branch_op(i: int):
    @op(name=f"branch_{i}")
    def branch(context: OpExecutionContext, width: int) -> int:
        context.log.info(f"branch {i} of {width}")
        return i

    return branch


@op(ins={f"in_{i}": In(int) for i in range(WIDTH)})
def gather(**values: int) -> int:
    return sum(values.values())


@job(executor_def=executor)
def fanout():
    width = start()
    gather(**{f"in_{i}": branch_op(i)(width) for i in range(WIDTH)})


@op
def explode():
    raise ValueError("boom from op explode")


@job(executor_def=executor)
def failing():
    explode()


defs = Definitions(jobs=[fanout, failing])
