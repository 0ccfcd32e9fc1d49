"""The benchmark's jobs: one graph per benchmark, each turned into one job per executor.

``chain`` (step start latency), ``fanout`` (wall and CPU time), ``sleeper`` (cancel latency),
``backlog`` and ``urgent`` (priority), ``launch_probe`` (run launch latency). The ops and graphs
are the same objects for every executor; only ``executor_def`` differs: job ``<graph>_<executor>``.
Transport settings come from the environment (taskiq) or from run config (celery broker/backend,
multiprocess max_concurrent), which bench/run.py sets identically for every run of an executor.
``launch_probe`` is one job for every run launcher: only its start is measured, so it runs its
single op in process.
"""

import os
import time

from dagster import Config, Definitions, In, graph, in_process_executor, multiprocess_executor, op
from dagster_celery import celery_executor

from dagster_taskiq_go import taskiq_executor

CHAIN_LENGTH = 8
FANOUT_WIDTH = 50

EXECUTORS = {
    "taskiq": taskiq_executor.configured(
        {
            "s3_bucket": {"env": "DAGSTER_TASKIQ_S3_BUCKET"},
            "endpoint_url": {"env": "DAGSTER_TASKIQ_ENDPOINT_URL"},
            "queue_prefix": {"env": "DAGSTER_TASKIQ_QUEUE_PREFIX"},
        }
    ),
    "celery": celery_executor,
    "multiprocess": multiprocess_executor,
}


# --- chain: CHAIN_LENGTH trivial ops in a line --------------------------------------------------


@op
def chain_head() -> int:
    return 0


@op
def chain_link(value: int) -> int:
    return value + 1


@graph
def chain():
    value = chain_head()
    for i in range(1, CHAIN_LENGTH):
        value = chain_link.alias(f"link_{i}")(value)


# --- fanout: 1 -> FANOUT_WIDTH -> 1 ---------------------------------------------------------------


@op
def fan_start() -> int:
    return FANOUT_WIDTH


def _branch(i: int):
    @op(name=f"branch_{i}")
    def branch(width: int) -> int:
        return i

    return branch


BRANCHES = [_branch(i) for i in range(FANOUT_WIDTH)]


@op(ins={f"in_{i}": In(int) for i in range(FANOUT_WIDTH)})
def fan_gather(**values: int) -> int:
    return sum(values.values())


@graph
def fanout():
    width = fan_start()
    fan_gather(**{f"in_{i}": branch(width) for i, branch in enumerate(BRANCHES)})


# --- sleeper: one op that beats into a file until it is stopped (cancel latency) ----------------


class SleeperConfig(Config):
    beat_file: str
    seconds: float


@op
def sleeper_nap(config: SleeperConfig) -> None:
    """Writes "<pid> <time>" to beat_file every 0.1 s for `seconds`: the harness sees when it stops."""
    deadline = time.time() + config.seconds
    while time.time() < deadline:
        tmp = f"{config.beat_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {time.time():.3f}\n")
        os.replace(tmp, config.beat_file)
        time.sleep(0.1)


@graph
def sleeper():
    sleeper_nap()


# --- priority: a backlog of napping ops, then an urgent op from another run -----------------------

BACKLOG_WIDTH = 16
BACKLOG_NAP_SECONDS = 1.5
# Each executor's own step priority tag, in its documented sense (higher = sooner). taskiq reads its
# own tag first and would read dagster-celery/priority only as a fallback.
URGENT_TAGS = {"dagster-taskiq/priority": "10", "dagster-celery/priority": "10"}


def _backlog_op(i: int):
    @op(name=f"backlog_{i}")
    def backlog_nap() -> None:
        time.sleep(BACKLOG_NAP_SECONDS)

    return backlog_nap


BACKLOG_OPS = [_backlog_op(i) for i in range(BACKLOG_WIDTH)]


@graph
def backlog():
    for nap in BACKLOG_OPS:
        nap()


@op(tags=URGENT_TAGS)
def urgent_op() -> None:
    return None


@graph
def urgent():
    urgent_op()


GRAPHS = {"chain": chain, "fanout": fanout, "sleeper": sleeper, "backlog": backlog, "urgent": urgent}

JOBS = {
    f"{graph_name}_{executor_name}": graph_def.to_job(name=f"{graph_name}_{executor_name}", executor_def=executor_def)
    for graph_name, graph_def in GRAPHS.items()
    for executor_name, executor_def in EXECUTORS.items()
}


# --- launch_probe: one trivial op, launched through a run launcher (run launch latency) -----------


@op
def probe_op() -> None:
    return None


@graph
def launch_probe_graph():
    probe_op()


JOBS["launch_probe"] = launch_probe_graph.to_job(name="launch_probe", executor_def=in_process_executor)

globals().update(JOBS)  # module-level names, for ReconstructableJob.for_file

defs = Definitions(jobs=list(JOBS.values()))
