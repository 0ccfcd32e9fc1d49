"""``taskiq_executor``: run each step of a job on SQS workers."""

from dagster import Field, IntSource, Noneable, executor
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.tags import get_tag_concurrency_limits_config
from dagster._core.executor.step_delegating import StepDelegatingExecutor

from dagster_taskiq_go.config import core_config_json, core_config_schema
from dagster_taskiq_go.step_handler import TaskiqStepHandler


def executor_config_schema() -> dict:
    return {
        **core_config_schema(),
        "retries": get_retries_config(),
        "max_concurrent": Field(
            Noneable(IntSource),
            is_required=False,
            description="Most steps of one run in flight at once (queued or running).",
        ),
        "tag_concurrency_limits": get_tag_concurrency_limits_config(),
    }


@executor(
    name="taskiq",
    config_schema=executor_config_schema(),
    requirements=multiple_process_executor_requirements(),
)
def taskiq_executor(init_context):
    """Runs each step of the job as a task on ``dagster-taskiq-go`` workers, through SQS."""
    config = init_context.executor_config
    return StepDelegatingExecutor(
        TaskiqStepHandler(core_config_json(config)),
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=config.get("max_concurrent"),
        tag_concurrency_limits=config.get("tag_concurrency_limits"),
        should_verify_step=True,
    )
