"""The warm step path: steps forked from the worker's step server run in their own session, produce
the same events as cold steps, never run stale code, survive the server's loss (cold path, then a
new server), stop on terminate and die with their worker."""

import json
import os
import re
import shutil
import signal
from collections import defaultdict

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from .stack import DagsterDev, Worker, create_queues, dagster_home, transport_env, wait_for, wait_for_run

JOBS = os.path.join(os.path.dirname(__file__), "..", "jobs", "warm_jobs.py")
ROUTE = "dagster-taskiq/queue"

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, dev, instance, workers, tmp, code):
        self.dev, self.instance, self.workers, self.tmp, self.code = dev, instance, workers, tmp, code

    def run(self, job: str, **kwargs):
        run_id = self.dev.client().submit_job_execution(job, **kwargs)
        run = wait_for_run(self.instance, run_id)
        assert run.status == DagsterRunStatus.SUCCESS, self.workers["warm"].log()[-3000:]
        return run

    def whoami(self, run_id: str) -> dict:
        with open(self.tmp / "whoami.jsonl") as f:
            [record] = [r for r in map(json.loads, f) if r["run_id"] == run_id]
        return record

    def servers(self, name: str = "warm") -> list[int]:
        """Pids of the worker's step servers, in the order they became ready."""
        return [int(pid) for pid in re.findall(r'msg="step server ready".* pid=(\d+)', self.workers[name].log())]

    def wait_servers(self, count: int, name: str = "warm") -> int:
        """Waits until the worker has had `count` servers ready; returns the newest one's pid."""
        return wait_for(lambda: len(self.servers(name)) >= count and self.servers(name)[-1], 60, f"step server {count}")


@pytest.fixture(scope="module")
def stack(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    code = tmp / "code"
    code.mkdir()
    shutil.copy(JOBS, code / "warm_jobs.py")
    (code / "warm_helper.py").write_text("VALUE = 1\n")
    home = dagster_home(tmp)
    patch = pytest.MonkeyPatch()
    for name, value in transport_env(moto_endpoint, "warm").items():
        patch.setenv(name, value)
    patch.setenv("TASKIQ_TEST_DIR", str(tmp))
    create_queues(os.environ, "dagster", "cold", "doomed")
    workers = {
        "warm": Worker("warm", ["dagster"], str(tmp)),
        "cold": Worker("cold", ["cold"], str(tmp), extra=("--step-process", "cold")),
    }
    dev = DagsterDev(str(code / "warm_jobs.py"), home, str(tmp), working_directory=str(code))
    instance = DagsterInstance.from_config(home)
    try:
        yield Stack(dev, instance, workers, tmp, code)
    finally:
        instance.dispose()
        dev.stop()
        for worker in workers.values():
            worker.stop()
        patch.undo()


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"^PPid:\s+(\d+)", f.read(), re.M).group(1))
    except OSError:
        return None


def test_steps_fork_from_the_step_server(stack):
    server = stack.wait_servers(1)
    run = stack.run("probe")
    me = stack.whoami(run.run_id)
    assert me["ppid"] == server, (me, stack.servers())
    assert me["sid"] == me["pid"], "a warm step leads its own session, so the worker can signal its group"
    assert me["value"] == 1


def step_event_types(instance, run_id: str) -> dict[str, list[str]]:
    by_step = defaultdict(list)
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key:
            by_step[event.step_key].append(event.event_type_value)
    return dict(by_step)


def test_warm_and_cold_steps_emit_the_same_events(stack):
    warm = stack.run("probe")
    cold = stack.run("probe", tags={ROUTE: "cold"})
    assert stack.whoami(cold.run_id)["ppid"] not in stack.servers()
    assert stack.servers("cold") == [], "a --step-process cold worker starts no step server"
    warm_events = step_event_types(stack.instance, warm.run_id)
    assert warm_events == step_event_types(stack.instance, cold.run_id)
    assert warm_events["whoami"][-1] == "STEP_SUCCESS"


def test_changed_code_never_runs_stale(stack):
    before = len(stack.servers())
    helper = stack.code / "warm_helper.py"
    helper.write_text("VALUE = 2\n")
    stat = helper.stat()
    os.utime(helper, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a changed mtime, however coarse

    changed = stack.run("probe")
    assert stack.whoami(changed.run_id)["value"] == 2
    log = stack.workers["warm"].log()
    assert "files changed since this server imported them" in log, log[-3000:]

    server = stack.wait_servers(before + 1)
    again = stack.run("probe")
    me = stack.whoami(again.run_id)
    assert me["value"] == 2 and me["ppid"] == server, (me, stack.servers())


def test_a_killed_server_is_replaced_and_steps_go_on(stack):
    before = stack.servers()
    os.kill(before[-1], signal.SIGKILL)
    stack.run("probe")  # while the server is down: the cold path
    server = stack.wait_servers(len(before) + 1)
    run = stack.run("probe")
    assert stack.whoami(run.run_id)["ppid"] == server


def napper(stack) -> int:
    pid_file = stack.tmp / "napper.pid"
    return wait_for(lambda: pid_file.exists() and pid_file.read_text() and int(pid_file.read_text()), 120, "naps")


def test_terminate_stops_a_warm_step(stack):
    (stack.tmp / "napper.pid").unlink(missing_ok=True)
    server = stack.wait_servers(1)
    run_id = stack.dev.client().submit_job_execution("nap")
    pid = napper(stack)
    assert parent_of(pid) == stack.servers()[-1] == server
    stack.dev.terminate(run_id)
    run = wait_for_run(stack.instance, run_id, timeout=120)
    assert run.status == DagsterRunStatus.CANCELED
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 60, "the warm step's process to be gone")


def test_warm_steps_die_with_their_worker(stack):
    (stack.tmp / "napper.pid").unlink(missing_ok=True)
    doomed = Worker("doomed", ["doomed"], str(stack.tmp), concurrency=1)
    stack.workers["doomed"] = doomed
    server = stack.wait_servers(1, "doomed")
    run_id = stack.dev.client().submit_job_execution("nap", tags={ROUTE: "doomed"})
    try:
        pid = napper(stack)
        assert parent_of(pid) == server
        os.kill(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait()
        wait_for(lambda: not os.path.exists(f"/proc/{server}"), 30, "the step server to die with its worker")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the warm step to die with its server")
    finally:
        run = stack.instance.get_run_by_id(run_id)
        if not run.is_finished:
            stack.instance.report_run_failed(run, "test: its worker was killed on purpose")
