"""Dagster executor and run launcher that dispatch steps and runs to worker fleets through AWS SQS.

Importing this package is cheap: Dagster and the Go core load only when an attribute needs them.
"""

from dagster_taskiq_go.version import __version__

__all__ = ["TaskiqRunLauncher", "TaskiqStepHandler", "__version__", "native_version", "taskiq_executor"]


def native_version() -> str:
    """The version of the Go core, read through the bridge."""
    from dagster_taskiq_go._pyshim import call

    return call("Version")


def __getattr__(name: str):
    if name == "taskiq_executor":
        from dagster_taskiq_go.executor import taskiq_executor

        return taskiq_executor
    if name == "TaskiqRunLauncher":
        from dagster_taskiq_go.launcher import TaskiqRunLauncher

        return TaskiqRunLauncher
    if name == "TaskiqStepHandler":
        from dagster_taskiq_go.step_handler import TaskiqStepHandler

        return TaskiqStepHandler
    raise AttributeError(f"module 'dagster_taskiq_go' has no attribute {name!r}")
