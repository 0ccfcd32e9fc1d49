"""``taskiq_executor``: run each step of a job on SQS workers."""

from dagster import DagsterRunStatus, Field, IntSource, Noneable, executor
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.tags import get_tag_concurrency_limits_config
from dagster._core.executor.step_delegating import StepDelegatingExecutor

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go.config import core_config_json, core_config_schema
from dagster_taskiq_go.step_handler import TaskiqStepHandler

# Each tick reads the run's new events: one indexed event-log query.
POLL_INTERVAL_SECONDS = 0.1


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
        "poll_interval_seconds": Field(
            float,
            default_value=POLL_INTERVAL_SECONDS,
            is_required=False,
            description="How often the run process reads the event log for finished steps and submits the "
            "steps that became ready. Dagster's own default, 1.0, adds half a second on average to every "
            "step's start.",
        ),
    }


class TaskiqExecutor(StepDelegatingExecutor):
    """Dagster's step delegation, plus one guarantee: when execution ends with the run CANCELING, every
    task of the run is canceled. Dagster skips terminate_step when it expects to resume the run
    (dagster issue #21476), which would leave canceled runs' steps running on workers."""

    def __init__(self, step_handler: TaskiqStepHandler, core_config: str, **kwargs):
        super().__init__(step_handler, **kwargs)
        self._core = core_config

    def execute(self, plan_context, execution_plan):
        try:
            yield from super().execute(plan_context, execution_plan)
        finally:
            instance = plan_context.instance
            run = instance.get_run_by_id(plan_context.run_id)
            if run is not None and run.status == DagsterRunStatus.CANCELING:
                canceled = call_json("CancelRun", self._core, run.run_id)
                if canceled:
                    instance.report_engine_event(
                        f"Run is canceling: canceled its {len(canceled)} unfinished task(s) on the workers: "
                        + ", ".join(c["task_id"] for c in canceled),
                        run,
                        cls=self.__class__,
                    )


@executor(
    name="taskiq",
    config_schema=executor_config_schema(),
    requirements=multiple_process_executor_requirements(),
)
def taskiq_executor(init_context):
    """Runs each step of the job as a task on ``dagster-taskiq-go`` workers, through SQS."""
    config = init_context.executor_config
    core = core_config_json(config)
    return TaskiqExecutor(
        TaskiqStepHandler(core),
        core,
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=config.get("max_concurrent"),
        tag_concurrency_limits=config.get("tag_concurrency_limits"),
        sleep_seconds=config["poll_interval_seconds"],
        should_verify_step=True,
    )
