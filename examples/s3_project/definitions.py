"""A project laid out for several hosts: whole runs go to workers through TaskiqRunLauncher (see
dagster.yaml), each step runs on a worker through taskiq_executor, and step outputs travel through S3
with dagster-aws's S3 IO manager, so no step needs a disk shared with another.

Transport settings come from the environment the worker CLI also reads: DAGSTER_TASKIQ_S3_BUCKET,
and DAGSTER_TASKIQ_ENDPOINT_URL only when set (a local emulator such as moto).
"""

import os

from dagster import Definitions, EnvVar, OpExecutionContext, job, op
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from dagster_taskiq_go import taskiq_executor

ENDPOINT_URL = os.environ.get("DAGSTER_TASKIQ_ENDPOINT_URL")  # unset on AWS
TRANSPORT = {"s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"}}
if ENDPOINT_URL:
    TRANSPORT["endpoint_url"] = {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"}


@op
def extract(context: OpExecutionContext) -> list[int]:
    context.log.info("extracting")
    return list(range(1, 11))


# A step tag routes this step to the "heavy" queue, in its high band: workers serving it take it
# before anything queued in the normal or low bands.
@op(tags={"dagster-taskiq/queue": "heavy", "dagster-taskiq/priority": "5"})
def transform(context: OpExecutionContext, numbers: list[int]) -> list[int]:
    context.log.info(f"squaring {len(numbers)} numbers")
    return [n * n for n in numbers]


@op
def load(context: OpExecutionContext, squares: list[int]) -> int:
    total = sum(squares)
    context.log.info(f"sum of squares: {total}")
    return total


@job(executor_def=taskiq_executor.configured(TRANSPORT))
def squares():
    load(transform(extract()))


defs = Definitions(
    jobs=[squares],
    resources={
        "io_manager": S3PickleIOManager(
            s3_resource=S3Resource(
                endpoint_url=ENDPOINT_URL,
                region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            ),
            s3_bucket=EnvVar("DAGSTER_TASKIQ_S3_BUCKET"),
            s3_prefix="io-manager",
        )
    },
)
