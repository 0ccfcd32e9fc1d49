"""Benchmark: taskiq_executor (warm and cold step path) vs dagster-celery's celery_executor vs Dagster's
multiprocess_executor.

    python bench/run.py [--quick] [--slots N] [--out DIR]      (make bench / make bench-quick)

The executors run the same job definitions (bench/bench_jobs.py: one graph per benchmark, turned into
one job per executor) with the same number of worker slots. ``taskiq`` and ``taskiq-cold`` are the
same stack and the same executor config; only their worker's ``--step-process`` differs (warm: steps
are forked from a step server; cold: a fresh interpreter per step). All stacks are up at
once and the runs are interleaved, in a rotating order, so that drift in the machine's load does not
always fall on the same executor. Each executor has a fresh DAGSTER_HOME (sqlite). Every run is
started the same way: a subprocess running ``dagster.execute_job`` on a ``ReconstructableJob``
(bench/launch.py). Timings are read from the Dagster event log, i.e. they are timestamps written by
the processes that did the work.

Measured (docs/performance.md defines each): step start latency on a chain of 8 ops; wall time, CPU
time and peak memory of a 1 -> 50 -> 1 fan-out; cancel latency (run end, and when the running step
really stopped); priority (does an urgent step from another run overtake a queued backlog); run
launch latency (``instance.launch_run`` to ``RUN_START``: TaskiqRunLauncher vs Dagster's
DefaultRunLauncher, bench/launch_run.py); idle broker requests per worker-minute, and per band queue
(taskiq: SQS/S3 requests counted at a proxy in front of moto; celery: Redis commands); worker RSS
idle and after the fan-out.

Infrastructure is started here and stopped here, by PID: a moto server (SQS + S3) per taskiq column,
with a counting proxy for the idle measurement, our workers (``python -m dagster_taskiq_go worker
start``), a redis-server (apt-installed when missing and running as root), a dagster-celery worker
(``dagster-celery worker start -A dagster_celery.app -y``) and, for the launch latency, a code server
per run launcher. Everything binds to 127.0.0.1 on free ports.

Benchmarks never assert timings. The script exits non-zero when any run fails or a measurement
cannot be taken, so the harness cannot rot unnoticed. Results: a table on stdout and
``<out>/results.json``; logs of every process under ``<out>/logs``.
"""

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.path.append(ROOT)  # tests.proxy and tests.e2e.stack, shared with the tests

EXECUTORS = ("taskiq", "taskiq-cold", "celery", "multiprocess")
STARTED = time.monotonic()


class BenchError(Exception):
    """A run failed or a measurement could not be taken: the harness exits non-zero."""


def _fail(message: str):
    raise BenchError(message)


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


# --- settings ------------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    slots: int
    chain_runs: int
    fanout_runs: int
    cancel_runs: int
    priority_runs: int
    launch_runs: int
    idle_seconds: float
    sleeper_seconds: float
    poll_wait: int = 20  # the worker CLI's default: what users run
    heartbeat: int = 5  # the worker CLI's default
    settle_seconds: float = 5.0

    @classmethod
    def make(cls, quick: bool, slots: int) -> "Settings":
        if quick:
            return cls(
                quick,
                slots,
                chain_runs=1,
                fanout_runs=1,
                cancel_runs=1,
                priority_runs=1,
                launch_runs=3,
                idle_seconds=30,
                sleeper_seconds=15,
            )
        return cls(
            quick,
            slots,
            chain_runs=3,
            fanout_runs=3,
            cancel_runs=2,
            priority_runs=2,
            launch_runs=5,
            idle_seconds=120,
            sleeper_seconds=45,
        )


# --- processes -----------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(ppid, comm) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    return int(data[data.rindex(")") + 2 :].split()[1]), comm


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2 :].split()[19])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _proc_stat(int(name))
            if stat:
                children.setdefault(stat[0], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) from /proc/<pid>/status, Pss from smaps_rollup; {} when gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1])
    except (OSError, ValueError):
        return out
    return out


def tree_memory_kb(roots: list[int]) -> dict[str, int]:
    """Summed RSS and PSS of root processes and all their descendants (PSS shares pages fairly)."""
    pids = {p for root in roots for p in [root, *descendants(root)]}
    rss = pss = 0
    for pid in pids:
        m = memory_kb(pid)
        rss += m.get("VmRSS", 0)
        pss += m.get("Pss", 0)
    return {"rss": rss, "pss": pss, "processes": len(pids)}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime of each live process (children it has reaped included).

    The difference of two readings over the same trees is the CPU the trees used in between, also
    for processes that exited and were reaped by a parent in the tree."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree(roots: list[int]) -> list[int]:
    return sorted({p for root in roots for p in [root, *descendants(root)]})


def reaped_children_cpu() -> float:
    """CPU of this harness's children that have exited and been waited for (and of their reaped
    descendants): how the CPU of a finished run process is read."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class MemorySampler:
    """Samples the summed PSS/RSS of process trees every `interval` seconds; keeps the peak."""

    def __init__(self, roots_fn, interval: float = 0.5):
        self.roots_fn = roots_fn
        self.interval = interval
        self.peak = {"rss": 0, "pss": 0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            sample = tree_memory_kb([p for p in self.roots_fn() if p])
            for key in self.peak:
                self.peak[key] = max(self.peak[key], sample[key])
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


class Proc:
    """A process started by the harness, logged to a file, stopped by PID (and its descendants)."""

    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: str, new_session: bool = False):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        with open(self.log_path, "ab") as f:
            self.popen = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=new_session
            )
        self.pid = self.popen.pid

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no {text!r} in its log after {timeout:.0f}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> None:
        """Signals the process; its descendants that outlive it get SIGKILL, each by its own PID."""
        # Remember each descendant with its start time, so a PID reused meanwhile is never signalled.
        family = [(pid, _start_time(pid)) for pid in descendants(self.pid)]
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            except ProcessLookupError:
                pass
        for pid, started in family:
            if started is not None and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# --- event log -----------------------------------------------------------------------------------


def _records(instance, run_id: str, event_type) -> list:
    return [r.event_log_entry for r in instance.get_records_for_run(run_id, of_type=event_type).records]


def step_times(instance, run_id: str, event_type) -> dict[str, float]:
    return {e.step_key: e.timestamp for e in _records(instance, run_id, event_type)}


def run_event_time(instance, run_id: str, *event_types) -> tuple[str, float] | None:
    for event_type in event_types:
        entries = _records(instance, run_id, event_type)
        if entries:
            return event_type.name, entries[-1].timestamp
    return None


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- one executor's stack ------------------------------------------------------------------------


@dataclass
class Stack:
    """An executor's running infrastructure, and what the benchmarks need to know about it."""

    name: str
    executor: str  # the executor's key in bench_jobs.EXECUTORS: jobs are named <graph>_<executor>
    env: dict
    home: str
    run_config: dict
    settings_text: str
    tick: dict
    worker: Proc | None = None  # the standing worker command (None: multiprocess)
    worker_pid_fn: Callable[[], int | None] | None = None  # -> the process that is "the worker"
    idle_start: Callable[[], None] | None = None  # called when the idle window opens
    idle_stop: Callable[[float, float], dict] | None = None  # (start, end) -> idle measurement
    broker_pid: int | None = None  # moto (taskiq) or redis-server (celery)
    instance: object = None  # a DagsterInstance on `home`, for reading the event log
    launcher_home: str | None = None  # a DAGSTER_HOME whose run launcher the launch latency measures
    launcher_text: str = ""  # that run launcher, for the report


def make_home(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "dagster.yaml"), "w") as f:
        f.write("telemetry:\n  enabled: false\n")
    return path


def launch(stack: Stack, job: str, run_config: dict, log_dir: str) -> tuple[Proc, str]:
    token = uuid.uuid4().hex[:12]
    job_name = f"{job}_{stack.executor}"
    cmd = [sys.executable, os.path.join(BENCH_DIR, "launch.py"), job_name, json.dumps(run_config), token]
    return Proc(f"run-{stack.name}-{job}-{token}", cmd, stack.env, log_dir), token


def find_run(instance, token: str) -> str | None:
    from dagster import RunsFilter

    runs = instance.get_runs(filters=RunsFilter(tags={"bench/token": token}), limit=1)
    return runs[0].run_id if runs else None


def wait_success(stack: Stack, job: str, proc: Proc, token: str, timeout: float) -> str:
    """Waits for a launched run; raises BenchError unless it exited 0 with a SUCCESS run."""
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.stop(10, signal.SIGKILL)
        raise BenchError(f"{stack.name}: {job} run did not finish in {timeout:.0f}s; see {proc.log_path}") from None
    run_id = find_run(stack.instance, token)
    run = stack.instance.get_run_by_id(run_id) if run_id else None
    if proc.popen.returncode != 0 or run is None or run.status.value != "SUCCESS":
        status = run.status.value if run else "no run"
        raise BenchError(
            f"{stack.name}: {job} run {run_id} ended {status} (exit {proc.popen.returncode}); "
            f"see {proc.log_path}\n{proc.log()[-3000:]}"
        )
    return run_id


def chain_once(stack: Stack, log_dir: str) -> dict:
    """One chain run: for each edge, downstream STEP_START minus upstream STEP_SUCCESS."""
    from bench_jobs import CHAIN_LENGTH
    from dagster import DagsterEventType

    keys = ["chain_head", *(f"link_{i}" for i in range(1, CHAIN_LENGTH))]
    proc, token = launch(stack, "chain", stack.run_config, log_dir)
    run_id = wait_success(stack, "chain", proc, token, 600)
    starts = step_times(stack.instance, run_id, DagsterEventType.STEP_START)
    successes = step_times(stack.instance, run_id, DagsterEventType.STEP_SUCCESS)
    if set(successes) != set(keys) or set(starts) != set(keys):
        raise BenchError(f"{stack.name}: chain run {run_id} started {sorted(starts)}, succeeded {sorted(successes)}")
    # When the executor handed each step off: its STEP_WORKER_STARTING event (taskiq: after the SQS
    # send; multiprocess: before starting the subprocess) or dagster-celery's "Submitting celery
    # task" engine event (just before apply_async). Splits the latency into reaction and start-up.
    handed = {}
    for e in _records(stack.instance, run_id, DagsterEventType.STEP_WORKER_STARTING):
        handed.setdefault(e.step_key, e.timestamp)
    for e in _records(stack.instance, run_id, DagsterEventType.ENGINE_EVENT):
        if e.step_key and (e.dagster_event.message or "").startswith("Submitting celery task"):
            handed.setdefault(e.step_key, e.timestamp)
    edges = list(zip(keys, keys[1:], strict=False))
    split = all(down in handed for _, down in edges)
    return {
        "run_id": run_id,
        "edge_latencies_s": [starts[down] - successes[up] for up, down in edges],
        "reaction_s": [handed[down] - successes[up] for up, down in edges] if split else None,
        "startup_s": [starts[down] - handed[down] for _, down in edges] if split else None,
        "step_body_s": [successes[k] - starts[k] for k in keys],
        "load_avg_1m": os.getloadavg()[0],
    }


def fanout_once(stack: Stack, log_dir: str) -> dict:
    """One fan-out run: RUN_START to RUN_SUCCESS, with the peak memory of everything it used."""
    from bench_jobs import FANOUT_WIDTH
    from dagster import DagsterEventType

    standing = tree([stack.worker.pid]) if stack.worker else []
    broker = [stack.broker_pid] if stack.broker_pid else []
    cpu_before = (reaped_children_cpu(), cpu_seconds(standing), cpu_seconds(broker))
    proc, token = launch(stack, "fanout", stack.run_config, log_dir)
    roots = [proc.pid] + ([stack.worker.pid] if stack.worker else [])
    with MemorySampler(lambda: roots) as sampler:
        run_id = wait_success(stack, "fanout", proc, token, 900)
    # The run process (with the step processes it reaped) has been waited for by now.
    standing_after = tree([stack.worker.pid]) if stack.worker else []
    cpu = {
        "run_process_s": reaped_children_cpu() - cpu_before[0],
        "worker_s": cpu_seconds(standing_after) - cpu_before[1] if stack.worker else 0.0,
        "broker_s": cpu_seconds(broker) - cpu_before[2] if broker else 0.0,
    }
    cpu["total_s"] = sum(cpu.values())
    successes = step_times(stack.instance, run_id, DagsterEventType.STEP_SUCCESS)
    if len(successes) != FANOUT_WIDTH + 2:
        raise BenchError(f"{stack.name}: fanout run {run_id} has {len(successes)} step successes")
    start = run_event_time(stack.instance, run_id, DagsterEventType.RUN_START)
    end = run_event_time(stack.instance, run_id, DagsterEventType.RUN_SUCCESS)
    return {
        "run_id": run_id,
        "steps": len(successes),
        "wall_s": end[1] - start[1],
        "peak_tree": dict(sampler.peak),
        "cpu": cpu,
        "load_avg_1m": os.getloadavg()[0],
    }


def cancel_once(stack: Stack, s: Settings, log_dir: str, work: str, i: int) -> dict:
    """Terminates a run whose step is sleeping, as a run launcher does: mark the run CANCELING, then
    interrupt the run process (SIGINT, which it captures as `dagster api execute_run` does). Measures
    when the run ends (its end event) and when the sleeping step actually stops running."""
    from dagster import DagsterEventType

    beat_file = os.path.join(work, f"beat-{stack.name}-{i}")
    run_config = dict(stack.run_config)
    run_config["ops"] = {"sleeper_nap": {"config": {"beat_file": beat_file, "seconds": s.sleeper_seconds}}}
    proc, token = launch(stack, "sleeper", run_config, log_dir)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(beat_file):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{stack.name}: the sleeper step never started; see {proc.log_path}")
            time.sleep(0.1)
        time.sleep(1.0)
        run_id = find_run(stack.instance, token)
        requested = time.time()
        stack.instance.report_run_canceling(stack.instance.get_run_by_id(run_id), message="bench: terminating run")
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.popen.wait(s.sleeper_seconds + 120)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{stack.name}: the canceled run did not end; see {proc.log_path}") from None
        exited = time.time()
        # The step has stopped once its beat file stops advancing (it beats every 0.1 s).
        deadline = requested + s.sleeper_seconds + 30
        while True:
            with open(beat_file) as f:
                last_beat = float(f.read().split()[1])
            if time.time() - last_beat > 1.5:
                break
            if time.time() > deadline:
                raise BenchError(f"{stack.name}: the sleeping step kept beating past its own end")
            time.sleep(0.2)
    finally:
        proc.stop(10, signal.SIGKILL)
    # RUN_SUCCESS too: an executor may ignore the termination and let the step finish (celery's
    # revoke does not stop a task that is already running). That is reported, not an error.
    end = run_event_time(
        stack.instance,
        run_id,
        DagsterEventType.RUN_CANCELED,
        DagsterEventType.RUN_FAILURE,
        DagsterEventType.RUN_SUCCESS,
    )
    if end is None:
        raise BenchError(f"{stack.name}: canceled run {run_id} has no run end event")
    return {
        "run_id": run_id,
        "run_end_event": end[0],
        "final_status": stack.instance.get_run_by_id(run_id).status.value,
        "run_end_s": end[1] - requested,
        "run_process_exit_s": exited - requested,
        # The beat resolution is 0.1 s: a step stopped at once may show its last beat just before.
        "step_stopped_s": max(0.0, last_beat - requested),
        "step_ran_to_completion": last_beat - requested >= s.sleeper_seconds - 2.5,
        "load_avg_1m": os.getloadavg()[0],
    }


def priority_once(stack: Stack, s: Settings, log_dir: str) -> dict:
    """A backlog run fills the slots and queues the rest of its napping steps; then a second run's
    single step, tagged urgent with the executor's own priority tag, is submitted. Counts how many
    queued backlog steps still started before it (0: it jumped the queue; all: plain FIFO)."""
    from dagster import DagsterEventType

    backlog_proc, backlog_token = launch(stack, "backlog", stack.run_config, log_dir)
    try:
        deadline = time.monotonic() + 300
        while True:
            backlog_id = find_run(stack.instance, backlog_token)
            started = step_times(stack.instance, backlog_id, DagsterEventType.STEP_START) if backlog_id else {}
            if len(started) >= s.slots:
                break
            if backlog_proc.popen.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{stack.name}: the backlog run never filled the slots; see {backlog_proc.log_path}")
            time.sleep(0.2)
        urgent_proc, urgent_token = launch(stack, "urgent", stack.run_config, log_dir)
        urgent_id = wait_success(stack, "urgent", urgent_proc, urgent_token, 600)
        backlog_id = wait_success(stack, "backlog", backlog_proc, backlog_token, 600)
    finally:
        backlog_proc.stop(10, signal.SIGKILL)
    submitted = run_event_time(stack.instance, urgent_id, DagsterEventType.RUN_START)[1]
    urgent_started = step_times(stack.instance, urgent_id, DagsterEventType.STEP_START)["urgent_op"]
    backlog_starts = step_times(stack.instance, backlog_id, DagsterEventType.STEP_START)
    return {
        "backlog_run_id": backlog_id,
        "urgent_run_id": urgent_id,
        "wait_s": urgent_started - submitted,
        "backlog_queued_at_submit": sum(1 for t in backlog_starts.values() if t > submitted),
        "backlog_started_ahead": sum(1 for t in backlog_starts.values() if submitted < t < urgent_started),
        "load_avg_1m": os.getloadavg()[0],
    }


def launch_latency(stack: Stack, s: Settings, log_dir: str, instance) -> dict:
    """Launches the trivial `launch_probe` job s.launch_runs times through the run launcher of
    stack.launcher_home (bench/launch_run.py) and reads, per run, RUN_START minus RUN_STARTING: both
    event-log timestamps, the first written by instance.launch_run just before it calls the launcher."""
    from dagster import DagsterEventType

    env = dict(stack.env, DAGSTER_HOME=stack.launcher_home)
    cmd = [sys.executable, os.path.join(BENCH_DIR, "launch_run.py"), str(s.launch_runs)]
    proc = Proc(f"launch-{stack.name}", cmd, env, log_dir)
    try:
        proc.popen.wait(120 + 300 * s.launch_runs)
    except subprocess.TimeoutExpired:
        proc.stop(10, signal.SIGKILL)
        raise BenchError(f"{stack.name}: run launches did not finish; see {proc.log_path}") from None
    lines = [line for line in proc.log().splitlines() if line.startswith('{"run_ids"')]
    if proc.popen.returncode != 0 or not lines:
        raise BenchError(f"{stack.name}: run launches failed (exit {proc.popen.returncode}):\n{proc.log()[-3000:]}")
    runs = []
    for run_id in json.loads(lines[-1])["run_ids"]:
        run = instance.get_run_by_id(run_id)
        starting = run_event_time(instance, run_id, DagsterEventType.RUN_STARTING)
        start = run_event_time(instance, run_id, DagsterEventType.RUN_START)
        if run.status.value != "SUCCESS" or starting is None or start is None:
            raise BenchError(f"{stack.name}: launched run {run_id} ended {run.status.value}; see {proc.log_path}")
        runs.append({"run_id": run_id, "latency_s": start[1] - starting[1]})
    return {
        "launcher": stack.launcher_text,
        "load_avg_1m": os.getloadavg()[0],  # once the launches are done
        "median_s": statistics.median(r["latency_s"] for r in runs),
        "max_s": max(r["latency_s"] for r in runs),
        "runs": runs,
    }


def worker_memory(stack: Stack) -> dict:
    pid = stack.worker_pid_fn() if stack.worker_pid_fn else None
    out = {"pid": pid, **(memory_kb(pid) if pid else {})}
    if stack.worker:
        out["tree"] = tree_memory_kb([stack.worker.pid])
    return out


# --- taskiq ---------------------------------------------------------------------------------------


def taskiq_worker_cmd(s: Settings, name: str, step_process: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dagster_taskiq_go",
        "worker",
        "start",
        "--name",
        name,
        "--concurrency",
        str(s.slots),
        "--poll-wait",
        str(s.poll_wait),
        "--heartbeat-interval",
        str(s.heartbeat),
        "--step-process",
        step_process,
        "-q",
        "dagster",
    ]


def create_taskiq_queue(env: dict, log_dir: str, name: str) -> None:
    proc = Proc(name, [sys.executable, "-m", "dagster_taskiq_go", "queue", "create", "dagster"], env, log_dir)
    if proc.popen.wait(120) != 0:
        raise BenchError(f"queue create failed:\n{proc.log()}")


def taskiq_poll_interval(run_config: dict) -> float:
    """The poll interval taskiq_executor runs with under this run config: its own, else the schema's default."""
    from dagster_taskiq_go.executor import executor_config_schema

    configured = run_config.get("execution", {}).get("config", {}).get("poll_interval_seconds")
    return configured if configured is not None else executor_config_schema()["poll_interval_seconds"].default_value


def cold_path_steps(worker: Proc) -> int:
    """How many steps a warm worker ran on the cold path (its step server was not ready or refused)."""
    return worker.log().count("step takes the cold path")


def taskiq_idle_probe(s: Settings, es: ExitStack, env: dict, endpoint: str, log_dir: str, step_process: str):
    """A second worker, alone on its own queues, talking to moto through a proxy that counts its
    requests (the benchmark's worker talks to moto directly). Returns (worker, idle_stop)."""
    from tests.proxy import FaultProxy

    proxy = es.enter_context(FaultProxy(int(endpoint.rsplit(":", 1)[1])))
    idle_env = dict(env, DAGSTER_TASKIQ_ENDPOINT_URL=proxy.endpoint)
    idle_env["DAGSTER_TASKIQ_QUEUE_PREFIX"] = prefix = f"idle{secrets.token_hex(3)}-"
    create_taskiq_queue(idle_env, log_dir, "taskiq-idle-queue-create")
    spawned = time.monotonic()
    idle_worker = Proc("taskiq-idle-worker", taskiq_worker_cmd(s, "bench-idle", step_process), idle_env, log_dir)
    es.callback(idle_worker.stop)

    def idle_stop(start: float, end: float) -> dict:
        idle_worker.stop()
        requests = proxy.window(start, end)
        minutes = (end - start) / 60
        sqs = [r for r in requests if r.service == "sqs"]
        band_of = {f"{prefix}dagster-high": "high", f"{prefix}dagster": "normal", f"{prefix}dagster-low": "low"}
        per_queue = Counter(band_of.get(r.queue, r.queue.removeprefix(prefix) or "(none)") for r in sqs)
        # A 30 s window holds one or two 20 s long polls per queue. Over the worker's whole life the
        # steady rate per band queue is measurable: every SQS request naming the queue after its
        # second receive, up to and including its last one, over that span. The first two are left
        # out: at start-up a worker receives twice from each queue within milliseconds (the first
        # returns at once), once per worker start, not per minute; start_receives counts them.
        life = [r for r in proxy.window(spawned, end) if r.service == "sqs"]
        gaps, steady, start_receives = [], {}, {}
        for queue in {r.queue for r in life if r.action == "ReceiveMessage"}:
            times = [r.at for r in life if r.action == "ReceiveMessage" and r.queue == queue]
            gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
            start_receives[queue.removeprefix(prefix)] = sum(1 for t in times if t - times[0] < 1.0)
            if len(times) >= 3:
                later = [r for r in life if r.queue == queue and times[1] < r.at <= times[-1]]
                steady[queue.removeprefix(prefix)] = len(later) / ((times[-1] - times[1]) / 60)
        return {
            "window_s": round(end - start, 2),
            "workers": 1,
            "sqs_requests_per_worker_minute": len(sqs) / minutes,
            "sqs_requests_per_queue_per_minute": {
                **{b: per_queue.get(b, 0) / minutes for b in ("high", "normal", "low")},
                **{q: n / minutes for q, n in sorted(per_queue.items()) if q not in ("high", "normal", "low")},
            },
            "sqs_requests_per_band_queue_minute_over_life": dict(sorted(steady.items())),
            "sqs_requests_per_band_queue_minute_max": max(steady.values()) if steady else None,
            "start_receives_per_queue_first_second": dict(sorted(start_receives.items())),
            "life_s": round(end - spawned, 1),
            "sqs_actions": dict(Counter(r.action for r in sqs)),
            "receive_interval_per_queue_median_s": statistics.median(gaps) if gaps else None,
            "queues_polled": len({r.queue for r in sqs if r.action == "ReceiveMessage"}),
            "s3_requests_per_worker_minute": sum(1 for r in requests if r.service == "s3") / minutes,
            "s3_actions": dict(Counter(r.action for r in requests if r.service == "s3")),
        }

    return idle_worker, idle_stop


def start_taskiq(s: Settings, es: ExitStack, work: str, log_dir: str, step_process: str, name: str) -> Stack:
    """The taskiq stack: its own moto server, bucket and queues, and one worker started with
    `--step-process step_process`. The warm stack also measures idle cost and run launch latency:
    runs always take the cold path, whatever --step-process says, so the cold stack would repeat them."""
    from dagster_taskiq_go.dev import local_env, moto_server
    from tests.e2e.stack import write_launcher_home

    warm = step_process == "warm"
    endpoint = es.enter_context(moto_server(os.path.join(log_dir, f"{name}-moto.log")))
    port = endpoint.rsplit(":", 1)[1]
    moto_pid = next(
        (
            p
            for p in descendants(os.getpid())
            if "\x00".join(["moto.server", "-H", "127.0.0.1", "-p", port]) in cmdline(p)
        ),
        None,
    )
    home = make_home(os.path.join(work, name, "dagster_home"))
    env = dict(os.environ, **local_env(endpoint, home))
    env["DAGSTER_TASKIQ_S3_BUCKET"] = f"bench-{secrets.token_hex(4)}"
    env["DAGSTER_TASKIQ_QUEUE_PREFIX"] = f"bench{secrets.token_hex(3)}-"
    create_taskiq_queue(env, log_dir, f"{name}-queue-create")
    worker = Proc(f"{name}-worker", taskiq_worker_cmd(s, name, step_process), env, log_dir)
    es.callback(worker.stop)
    idle_worker, idle_stop = taskiq_idle_probe(s, es, env, endpoint, log_dir, step_process) if warm else (None, None)
    worker.wait_for_log("worker started", 60)
    if warm:
        # Steps that arrive before the step server is ready take the cold path: start measuring after.
        worker.wait_for_log("step server ready", 120)
        idle_worker.wait_for_log("worker started", 60)

    run_config: dict = {}  # the executor's defaults, for both stacks
    poll = taskiq_poll_interval(run_config)
    step_text = (
        "warm: each step is forked from the worker's step server, which has imported Dagster and, once it "
        "has seen a step, the code location"
        if warm
        else "cold: each step is a fresh `python -m dagster_taskiq_go.child` interpreter"
    )
    return Stack(
        name=name,
        executor="taskiq",
        env=env,
        home=home,
        run_config=run_config,
        settings_text=(
            f"1 worker x {s.slots} slots, --step-process {step_process} ({step_text}); worker --poll-wait "
            f"{s.poll_wait}s (SQS long poll: returns on arrival), --heartbeat-interval {s.heartbeat}s; "
            f"taskiq_executor poll_interval_seconds {poll:g} (the run process's loop)"
        ),
        tick={
            "executor_poll_s": poll,
            "poll_wait_s": s.poll_wait,
            "heartbeat_s": s.heartbeat,
            "step_process": step_process,
        },
        worker=worker,
        worker_pid_fn=lambda: worker.pid,
        broker_pid=moto_pid or _fail("could not find the moto server's process"),
        idle_start=(lambda: None) if warm else None,
        idle_stop=idle_stop,
        # Runs go to the same worker's run slot (--run-concurrency, default 1) through queue `dagster`.
        launcher_home=write_launcher_home(os.path.join(work, name, "launcher_home")) if warm else None,
        launcher_text="TaskiqRunLauncher (a run slot of the benchmark's worker; runs start cold)",
    )


# --- celery ---------------------------------------------------------------------------------------


def ensure_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() != 0:
        raise BenchError(
            "redis-server is not installed and this is not root: install it with "
            "`sudo apt-get install -y redis-server` and run the benchmark again"
        )
    log("redis-server is missing: apt-get update && apt-get install -y redis-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    path = shutil.which("redis-server")
    if not path:
        raise BenchError("apt-get installed redis-server but it is not on PATH")
    return path


class RedisServer:
    def __init__(self, log_dir: str):
        import redis

        from dagster_taskiq_go.dev import free_port

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        cmd = [ensure_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no"]
        self.proc = Proc("redis-server", cmd, dict(os.environ), log_dir)
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not start:\n{self.proc.log()[-2000:]}") from None
                time.sleep(0.1)

    def command_counts(self) -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in self.client.info("commandstats").items()}

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def celery_main_pid(wrapper: Proc) -> int | None:
    """The `celery worker` process: the child of the `dagster-celery worker start` wrapper."""
    for pid in descendants(wrapper.pid):
        stat = _proc_stat(pid)
        if stat and stat[0] == wrapper.pid:
            return pid
    return None


def start_celery(s: Settings, es: ExitStack, work: str, log_dir: str) -> Stack:
    import yaml
    from dagster_celery.core_execution_loop import TICK_SECONDS

    redis_server = RedisServer(log_dir)
    es.callback(redis_server.stop)
    home = make_home(os.path.join(work, "celery", "dagster_home"))
    env = dict(os.environ, DAGSTER_HOME=home)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    executor_config = {"broker": redis_server.url, "backend": redis_server.url}
    config_yaml = os.path.join(work, "celery", "celery.yaml")
    with open(config_yaml, "w") as f:
        yaml.safe_dump({"execution": {"config": executor_config}}, f)
    cmd = [os.path.join(os.path.dirname(sys.executable), "dagster-celery"), "worker", "start"]
    cmd += ["-A", "dagster_celery.app", "-y", config_yaml, "--name", "bench", "--", f"--concurrency={s.slots}"]
    worker = Proc("celery-worker", cmd, env, log_dir, new_session=True)

    def stop_worker():
        # SIGTERM to the celery process itself (a warm shutdown); its wrapper exits when it does.
        main = celery_main_pid(worker)
        if main:
            try:
                os.kill(main, signal.SIGTERM)
            except ProcessLookupError:
                pass
        worker.stop()

    es.callback(stop_worker)
    worker.wait_for_log(" ready.", 120)
    before = {}

    def idle_start():
        before.update(redis_server.command_counts())

    def idle_stop(start: float, end: float) -> dict:
        after = redis_server.command_counts()
        delta = {k: v - before.get(k, 0) for k, v in after.items()}
        delta["info"] = delta.get("info", 0) - 1  # our own INFO at the window's start
        delta = {k: v for k, v in delta.items() if v > 0}
        return {
            "window_s": round(end - start, 2),
            "workers": 1,
            "redis_commands_per_worker_minute": sum(delta.values()) / ((end - start) / 60),
            "redis_commands": delta,
        }

    return Stack(
        name="celery",
        executor="celery",
        env=env,
        home=home,
        run_config={"execution": {"config": executor_config}},
        settings_text=(
            f"1 worker x {s.slots} prefork processes (--concurrency={s.slots}, prefetch 1), Redis broker and "
            f"result backend; executor tick {TICK_SECONDS}s (dagster_celery core_execution_loop.TICK_SECONDS); "
            "steps run in warm pool processes"
        ),
        tick={"executor_tick_s": TICK_SECONDS},
        worker=worker,
        worker_pid_fn=lambda: celery_main_pid(worker),
        broker_pid=redis_server.proc.pid,
        idle_start=idle_start,
        idle_stop=idle_stop,
    )


# --- multiprocess ---------------------------------------------------------------------------------


def start_multiprocess(s: Settings, es: ExitStack, work: str, log_dir: str) -> Stack:
    home = make_home(os.path.join(work, "multiprocess", "dagster_home"))
    return Stack(
        name="multiprocess",
        executor="multiprocess",
        env=dict(os.environ, DAGSTER_HOME=home),
        home=home,
        run_config={"execution": {"config": {"max_concurrent": s.slots}}},
        settings_text=(
            f"max_concurrent {s.slots}; no tick or broker: the run process starts each step as a child "
            "process (start method spawn, Dagster's default: cold start) and reads its events through a pipe"
        ),
        tick={},
        # No run launcher configured: Dagster's DefaultRunLauncher (a subprocess of the code server).
        launcher_home=make_home(os.path.join(work, "multiprocess", "launcher_home")),
        launcher_text="DefaultRunLauncher (Dagster's default: the run is a subprocess of the code server)",
    )


STARTERS = {
    "taskiq": lambda *a: start_taskiq(*a, step_process="warm", name="taskiq"),
    "taskiq-cold": lambda *a: start_taskiq(*a, step_process="cold", name="taskiq-cold"),
    "celery": start_celery,
    "multiprocess": start_multiprocess,
}


# --- the benchmark --------------------------------------------------------------------------------


def rotated(names: list[str], i: int) -> list[str]:
    """The executors in a different order each repetition, so that drift in the machine's load
    does not always fall on the same one."""
    return names[i % len(names) :] + names[: i % len(names)]


def benchmark(s: Settings, names: list[str], work: str, log_dir: str, results: dict) -> None:
    from dagster import DagsterInstance

    with ExitStack() as es:
        stacks = {}
        for name in names:
            log(f"{name}: starting its infrastructure")
            stacks[name] = STARTERS[name](s, es, work, log_dir)
            stacks[name].instance = es.enter_context(DagsterInstance.from_config(stacks[name].home))
            results["executors"][name] = {"settings": stacks[name].settings_text, "tick": stacks[name].tick}
        time.sleep(s.settle_seconds)

        idle = [st for st in stacks.values() if st.idle_stop and s.idle_seconds > 0]
        if idle:
            log(f"idle: counting broker requests of idle workers ({', '.join(st.name for st in idle)}) "
                f"for {s.idle_seconds:.0f}s")  # fmt: skip
            for st in idle:
                st.idle_start()
            start = time.monotonic()
            time.sleep(s.idle_seconds)
            end = time.monotonic()
            for st in idle:
                results["executors"][st.name]["idle"] = st.idle_stop(start, end)
        for st in stacks.values():
            if st.worker:
                results["executors"][st.name]["worker_memory_idle"] = worker_memory(st)

        chains = {name: [] for name in names}
        for i in range(s.chain_runs):
            for name in rotated(names, i):
                chains[name].append(chain_once(stacks[name], log_dir))
                edges = chains[name][-1]["edge_latencies_s"]
                log(f"{name}: chain {i + 1}/{s.chain_runs}: step start latency p50 {statistics.median(edges):.3f}s")
        fanouts = {name: [] for name in names}
        for i in range(s.fanout_runs):
            for name in rotated(names, i):
                fanouts[name].append(fanout_once(stacks[name], log_dir))
                log(f"{name}: fan-out {i + 1}/{s.fanout_runs}: {fanouts[name][-1]['wall_s']:.1f}s")
                if stacks[name].worker:
                    results["executors"][name]["worker_memory_after_fanout"] = worker_memory(stacks[name])
        cancels = {name: [] for name in names}
        for i in range(s.cancel_runs):
            for name in rotated(names, i):
                c = cancel_once(stacks[name], s, log_dir, work, i)
                cancels[name].append(c)
                log(
                    f"{name}: cancel {i + 1}/{s.cancel_runs}: run {c['final_status']} after {c['run_end_s']:.1f}s, "
                    f"step stopped after {c['step_stopped_s']:.1f}s"
                    + (" (it ran to completion: never stopped)" if c["step_ran_to_completion"] else "")
                )

        queued = [name for name in names if name in PRIORITY_EXECUTORS]
        priorities = {name: [] for name in queued}
        for i in range(s.priority_runs):
            for name in rotated(queued, i):
                p = priority_once(stacks[name], s, log_dir)
                priorities[name].append(p)
                log(
                    f"{name}: priority {i + 1}/{s.priority_runs}: urgent step waited {p['wait_s']:.1f}s; "
                    f"{p['backlog_started_ahead']} of {p['backlog_queued_at_submit']} queued backlog steps started "
                    "before it"
                )

        for name in names:
            if stacks[name].launcher_home and s.launch_runs:
                with DagsterInstance.from_config(stacks[name].launcher_home) as instance:
                    launched = launch_latency(stacks[name], s, log_dir, instance)
                results["executors"][name]["launch"] = launched
                log(
                    f"{name}: run launch latency median {launched['median_s']:.2f}s over {len(launched['runs'])} "
                    f"runs ({launched['launcher']})"
                )

        for name in names:
            r = results["executors"][name]
            if stacks[name].worker and stacks[name].tick.get("step_process") == "warm":
                r["cold_path_steps"] = cold_path_steps(stacks[name].worker)
            if priorities.get(name):
                runs = priorities[name]
                r["priority"] = {
                    "wait_median_s": statistics.median(p["wait_s"] for p in runs),
                    "started_ahead_median": statistics.median(p["backlog_started_ahead"] for p in runs),
                    "queued_at_submit_median": statistics.median(p["backlog_queued_at_submit"] for p in runs),
                    "runs": runs,
                }
            if chains[name]:
                latencies = [x for c in chains[name] for x in c["edge_latencies_s"]]
                bodies = [x for c in chains[name] for x in c["step_body_s"]]
                split = all(c["reaction_s"] is not None for c in chains[name])
                reaction = [x for c in chains[name] for x in c["reaction_s"]] if split else None
                startup = [x for c in chains[name] for x in c["startup_s"]] if split else None
                r["chain"] = {
                    "reaction_p50_s": percentile(reaction, 50) if split else None,
                    "startup_p50_s": percentile(startup, 50) if split else None,
                    "samples": len(latencies),
                    "p50_s": percentile(latencies, 50),
                    "p95_s": percentile(latencies, 95),
                    "max_s": max(latencies),
                    "step_body_p50_s": percentile(bodies, 50),
                    "runs": chains[name],
                }
            if fanouts[name]:
                walls = [f["wall_s"] for f in fanouts[name]]
                r["fanout"] = {
                    "wall_median_s": statistics.median(walls),
                    "wall_min_s": min(walls),
                    "wall_max_s": max(walls),
                    "peak_tree_pss_kb": max(f["peak_tree"]["pss"] for f in fanouts[name]),
                    "peak_tree_rss_kb": max(f["peak_tree"]["rss"] for f in fanouts[name]),
                    "cpu_total_median_s": statistics.median(f["cpu"]["total_s"] for f in fanouts[name]),
                    "cpu_broker_median_s": statistics.median(f["cpu"]["broker_s"] for f in fanouts[name]),
                    "runs": fanouts[name],
                }
            if cancels[name]:
                r["cancel"] = {
                    "sleeper_seconds": s.sleeper_seconds,
                    "run_end_median_s": statistics.median(c["run_end_s"] for c in cancels[name]),
                    "step_stopped_median_s": statistics.median(c["step_stopped_s"] for c in cancels[name]),
                    "step_ran_to_completion": any(c["step_ran_to_completion"] for c in cancels[name]),
                    "runs": cancels[name],
                }
            idle = r.get("idle", {})
            r["idle_requests_per_worker_minute"] = idle.get(
                "sqs_requests_per_worker_minute", idle.get("redis_commands_per_worker_minute")
            )
        log("stopping the infrastructure")


# --- report ---------------------------------------------------------------------------------------


def _get(d: dict, path: str):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


IDLE_PER_QUEUE = "idle.sqs_requests_per_band_queue_minute_max"
ROWS = [
    # (label, path in an executor's results, unit, format)
    ("step start latency p50", "chain.p50_s", "s", "{:.3f}"),
    ("step start latency p95", "chain.p95_s", "s", "{:.3f}"),
    ("step start latency max", "chain.max_s", "s", "{:.3f}"),
    ("  samples (chain edges)", "chain.samples", "n", "{:.0f}"),
    ("  p50 part 1: upstream STEP_SUCCESS -> hand-off", "chain.reaction_p50_s", "s", "{:.3f}"),
    ("  p50 part 2: hand-off -> STEP_START", "chain.startup_p50_s", "s", "{:.3f}"),
    ("step body time p50 (STEP_START->SUCCESS)", "chain.step_body_p50_s", "s", "{:.3f}"),
    ("warm worker: steps that fell back to the cold path", "cold_path_steps", "steps", "{:.0f}"),
    ("fan-out 1->50->1 wall (median)", "fanout.wall_median_s", "s", "{:.1f}"),
    ("fan-out CPU time, all processes (median)", "fanout.cpu_total_median_s", "s", "{:.1f}"),
    ("  of which the broker (moto / redis-server)", "fanout.cpu_broker_median_s", "s", "{:.1f}"),
    ("fan-out peak PSS, all processes", "fanout.peak_tree_pss_kb", "MiB", "{:.0f}"),
    ("cancel: run ended after", "cancel.run_end_median_s", "s", "{:.1f}"),
    ("cancel: step stopped after", "cancel.step_stopped_median_s", "s", "{:.1f}"),
    ("priority: urgent step wait (its RUN_START->STEP_START)", "priority.wait_median_s", "s", "{:.1f}"),
    ("priority: queued backlog steps when it was submitted", "priority.queued_at_submit_median", "steps", "{:.0f}"),
    ("priority: ... of which started before it (0 = jumped)", "priority.started_ahead_median", "steps", "{:.0f}"),
    ("run launch latency (launch_run -> RUN_START, median)", "launch.median_s", "s", "{:.2f}"),
    ("idle broker requests / worker-min (celery: Redis cmds)", "idle_requests_per_worker_minute", "req", "{:.1f}"),
    ("idle SQS requests / worker-min per band queue (max)", IDLE_PER_QUEUE, "req", "{:.1f}"),
    ("idle S3 requests / worker-min", "idle.s3_requests_per_worker_minute", "req", "{:.1f}"),
    ("worker VmRSS idle", "worker_memory_idle.VmRSS", "MiB", "{:.0f}"),
    ("worker VmRSS after fan-out", "worker_memory_after_fanout.VmRSS", "MiB", "{:.0f}"),
    ("worker VmHWM (peak) after fan-out", "worker_memory_after_fanout.VmHWM", "MiB", "{:.0f}"),
    ("worker tree PSS idle", "worker_memory_idle.tree.pss", "MiB", "{:.0f}"),
]
# Ratios: taskiq's value over another column's.
RATIOS = ("taskiq/celery", "taskiq/multiprocess", "taskiq/taskiq-cold")
NO_RATIO_UNITS = ("n", "steps")
# Measurements coarser than the event log's millisecond timestamps.
RESOLUTION = {"cancel.step_stopped_median_s": 0.1}
# Runs of the multiprocess executor share no queue: one run's steps cannot overtake another's.
PRIORITY_EXECUTORS = ("taskiq", "taskiq-cold", "celery")


def tick_text(tick: dict | None) -> str:
    """The polling intervals that bound step start latency, compactly."""
    if tick is None:
        return "n/a"
    if "executor_poll_s" in tick:
        return f"poll {tick['executor_poll_s']:g}s, SQS wait {tick['poll_wait_s']}s, {tick['step_process']}"
    if "executor_tick_s" in tick:
        return f"tick {tick['executor_tick_s']:g}s"
    return "none"


def table(results: dict) -> tuple[str, list[dict]]:
    """The side-by-side table (markdown) and its rows; ratios are taskiq's value over the other's."""
    rows, cells = [], [["metric", "unit", *EXECUTORS, *RATIOS]]
    for label, path, unit, fmt in ROWS:
        row = {"metric": label, "unit": unit}
        for name in EXECUTORS:
            value = _get(results["executors"].get(name, {}), path)
            row[name] = value / 1024 if value is not None and unit == "MiB" else value
        for ratio in RATIOS:
            a, b = row["taskiq"], row[ratio.split("/")[1]]
            # No ratio to a value that is zero within the measurement's resolution (e.g. a step that
            # stopped "0.0 s" after a cancel, measured by a 0.1 s heartbeat).
            tiny = b is not None and abs(b) < RESOLUTION.get(path, 1e-3) / 2
            usable = a is not None and b is not None and not tiny and unit not in NO_RATIO_UNITS
            row[ratio] = a / b if usable else None
        rows.append(row)
        line = [label, unit, *("n/a" if row[n] is None else fmt.format(row[n]) for n in EXECUTORS)]
        line += ["" if unit in NO_RATIO_UNITS else "n/a" if row[k] is None else f"{row[k]:.2f}x" for k in RATIOS]
        cells.append(line)
        if label == "step start latency max":
            ticks = {name: tick_text(results["executors"].get(name, {}).get("tick")) for name in EXECUTORS}
            rows.append({"metric": "  executor tick / worker poll", "unit": "", **ticks})
            cells.append(["  executor tick / worker poll", "", *ticks.values(), *("" for _ in RATIOS)])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]

    def fmt_line(c):
        padded = (v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    lines = [fmt_line(cells[0]), rule, *(fmt_line(c) for c in cells[1:])]
    return "\n".join(lines), rows


def report(results: dict) -> str:
    text, rows = table(results)
    results["table"] = rows
    out = [text, ""]
    for name in EXECUTORS:
        r = results["executors"].get(name, {})
        out.append(f"{name}: {r.get('settings', '')}")
    idle = _get(results["executors"], "taskiq.idle")
    if idle:
        queues = ", ".join(f"{q} {v:.1f}" for q, v in idle["sqs_requests_per_queue_per_minute"].items())
        interval = idle["receive_interval_per_queue_median_s"]
        out.append(
            f"taskiq idle: {idle['sqs_requests_per_worker_minute']:.1f} SQS requests/worker-min "
            f"(per queue/min: {queues}; actions {idle['sqs_actions']}); "
            f"{idle['s3_requests_per_worker_minute']:.1f} S3 requests/worker-min ({idle['s3_actions']}); "
            f"window {idle['window_s']:.0f}s; median interval between one queue's receives "
            + ("n/a" if interval is None else f"{interval:.1f}s")
            + (
                f" (steady state: {idle['queues_polled']} queues x 60/{interval:.0f} = "
                f"{idle['queues_polled'] * 60 / interval:.1f} receives/min)"
                if interval
                else ""
            )
        )
        per_band = ", ".join(f"{q} {v:.1f}" for q, v in idle["sqs_requests_per_band_queue_minute_over_life"].items())
        out.append(
            f"taskiq idle per band queue, over the idle worker's {idle['life_s']:.0f}s life, between each "
            f"queue's second and last receive: {per_band} SQS requests/min; receives in each queue's first "
            f"second (start-up): {idle['start_receives_per_queue_first_second']}"
        )
    idle = _get(results["executors"], "celery.idle")
    if idle:
        out.append(
            f"celery idle: {idle['redis_commands_per_worker_minute']:.1f} Redis commands/worker-min "
            f"({idle['redis_commands']}), window {idle['window_s']:.0f}s"
        )
    for name in EXECUTORS:
        cancel = _get(results["executors"], f"{name}.cancel")
        if cancel:
            runs = "; ".join(
                f"{r['final_status']} via {r['run_end_event']}, run end {r['run_end_s']:.1f}s, "
                f"step stopped {r['step_stopped_s']:.1f}s"
                + (" (ran to completion)" if r["step_ran_to_completion"] else "")
                for r in cancel["runs"]
            )
            out.append(f"{name} cancel (sleeper {cancel['sleeper_seconds']:g}s): {runs}")
    for name in EXECUTORS:
        launched = _get(results["executors"], f"{name}.launch")
        if launched:
            runs = ", ".join(f"{r['latency_s']:.2f}s" for r in launched["runs"])
            out.append(f"{name} run launch: {launched['launcher']}: {runs}")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def preflight() -> None:
    missing = []
    for module, hint in (
        ("dagster_taskiq_go._native", "run `make install`"),
        ("dagster_celery", "run `make venv`"),
        ("redis", "run `make bench` (it installs bench/requirements.txt) or `pip install -r bench/requirements.txt`"),
        ("moto", "run `make venv`"),
    ):
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{module}: {exc} ({hint})")
    if missing:
        raise BenchError("missing Python modules:\n  " + "\n  ".join(missing))
    ensure_redis_server()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 30 s idle window (< 10 min)")
    parser.add_argument("--slots", type=int, default=4, help="worker slots for every executor (default 4)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench-results"), help="results directory")
    parser.add_argument(
        "--only", choices=EXECUTORS, action="append", help="run only this executor (repeatable; for debugging)"
    )
    parser.add_argument(
        "--skip",
        choices=("idle", "chain", "fanout", "cancel", "priority", "launch"),
        action="append",
        default=[],
        help="skip this measurement (repeatable; for debugging)",
    )
    args = parser.parse_args(argv)
    s = Settings.make(args.quick, args.slots)
    for skipped in args.skip:
        if skipped == "idle":
            s.idle_seconds = 0
        else:
            setattr(s, f"{skipped}_runs", 0)
    executors = args.only or list(EXECUTORS)

    out = os.path.abspath(args.out)
    work, log_dir = os.path.join(out, "work"), os.path.join(out, "logs")
    for path in (work, log_dir):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    os.environ.setdefault("DAGSTER_HOME", make_home(os.path.join(work, "harness_home")))

    results = {
        "mode": "quick" if s.quick else "full",
        "settings": asdict(s),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "versions": {},
        "executors": {},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ok = False
    try:
        preflight()
        import importlib.metadata as md

        for dist in ("dagster", "dagster-celery", "celery", "redis", "moto", "dagster-taskiq-go"):
            results["versions"][dist] = md.version(dist)
        results["versions"]["redis-server"] = subprocess.run(
            [ensure_redis_server(), "--version"], capture_output=True, text=True
        ).stdout.strip()
        log(f"benchmark ({results['mode']}): {', '.join(executors)} with {s.slots} slots each; logs in {log_dir}")
        results["load_avg_at_start"] = os.getloadavg()
        benchmark(s, executors, work, log_dir, results)
        ok = True
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("\nBENCHMARK INTERRUPTED", file=sys.stderr, flush=True)
    finally:
        results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["ok"] = ok
        results["elapsed_s"] = round(time.monotonic() - STARTED, 1)
        results["load_avg_at_end"] = os.getloadavg()
        try:
            text = report(results) if results["executors"] else ""
            loads = [
                " ".join(f"{x:.1f}" for x in results.get(k) or ()) for k in ("load_avg_at_start", "load_avg_at_end")
            ]
            text += f"\nload average (1, 5, 15 min) at start: {loads[0]}; at end: {loads[1]} ({os.cpu_count()} CPUs)"
        except Exception as exc:  # a report bug must not hide the results file
            text, ok = f"report failed: {exc!r}", False
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
        if text:
            print("\n" + text)
        print(f"\nresults: {os.path.join(out, 'results.json')} ({results['elapsed_s']:.0f}s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
