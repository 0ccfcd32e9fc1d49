"""Entry point of a worker's child process: ``python -m dagster_taskiq_go.child KIND``.

The worker starts it with the task's serialized Dagster args on stdin. It never loads the Go core.
For steps it records which worker picked the step up, then runs Dagster's own step body; for runs it
hands over to ``dagster api execute_run`` / ``resume_run``.
"""

import base64
import os
import socket
import sys
import zlib

KINDS = ("execute_step", "execute_run", "resume_run")


def _worker_metadata() -> dict[str, str]:
    return {
        "worker_id": os.environ.get("DAGSTER_TASKIQ_WORKER_ID", "-"),
        "task_id": os.environ.get("DAGSTER_TASKIQ_TASK_ID", "-"),
        "queue": os.environ.get("DAGSTER_TASKIQ_QUEUE", "-"),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }


def execute_step(compressed_args: str) -> None:
    from dagster._cli.api import _execute_step_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._core.events import EngineEventData
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        args = deserialize_value(zlib.decompress(base64.b64decode(compressed_args)).decode(), ExecuteStepArgs)
        step_key = (args.step_keys_to_execute or ["-"])[0]
        with get_instance_for_cli(instance_ref=args.instance_ref) as instance:
            run = instance.get_run_by_id(args.run_id)
            if run is None:
                raise RuntimeError(f"Run {args.run_id} not found for step {step_key}")
            meta = _worker_metadata()
            instance.report_engine_event(
                f'Step "{step_key}" picked up by worker {meta["worker_id"]} on {meta["host"]} '
                f"(queue {meta['queue']}, task {meta['task_id']}).",
                run,
                EngineEventData(metadata=meta),
                step_key=step_key,
            )
            for _ in _execute_step_command_body(args, instance, run):
                pass


def execute_run(kind: str, serialized_args: str) -> None:
    from dagster._cli import main as dagster_main

    sys.argv = ["dagster", "api", kind, serialized_args]
    dagster_main()


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in KINDS:
        sys.exit(f"usage: python -m dagster_taskiq_go.child {{{'|'.join(KINDS)}}} < ARGS")
    kind, args = argv[1], sys.stdin.read()
    if kind == "execute_step":
        execute_step(args)
    else:
        execute_run(kind, args)


if __name__ == "__main__":
    main(sys.argv)
