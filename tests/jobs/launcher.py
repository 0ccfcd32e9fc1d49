"""Jobs launched through TaskiqRunLauncher in the end-to-end tests."""

import time

from dagster import Definitions, in_process_executor, job, op


@op
def say_hello() -> str:
    return "hello"


@job(executor_def=in_process_executor)
def hello():
    say_hello()


@op
def nap():
    time.sleep(120)


@job(executor_def=in_process_executor)
def sleepy():
    nap()


defs = Definitions(jobs=[hello, sleepy])
