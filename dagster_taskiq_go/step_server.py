"""The warm step path: ``python -m dagster_taskiq_go.step_server SOCKET``.

A worker keeps one of these per worker process. It imports Dagster (and, once it has seen a step, that
step's code location) and then forks one child per step task, so a step pays neither an interpreter
start nor ``import dagster``. Each child calls ``setsid`` (the worker signals its process group, as
for a cold child), dies with the server, and runs exactly what a cold child runs
(``dagster_taskiq_go.child.execute_step``), so a step's events are the same on either path.

Before forking, the server holds no threads, connections or Dagster instance, and never loads the
Go core. It is single-threaded: one selector loop over the listening socket, the task connections and
a SIGCHLD wake-up pipe.

Protocol, one Unix-socket connection per task. The worker sends one JSON line
``{"task_id", "env", "args"}`` whose first bytes carry, as SCM_RIGHTS, the write end of the pipe that
becomes the child's stdout and stderr. The server answers ``{"pid": N}`` and, when the child has
exited, ``{"exit": CODE}`` (-1 when a signal killed it); or ``{"cold": REASON}`` when this task must
take the cold path (another code location, changed code, a thread found before forking). A server
whose code changed exits once its children are done, and the worker starts a fresh one. The worker
closing the server's stdin stops the server.
"""

import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback

from dagster_taskiq_go.child import execute_step

PR_SET_PDEATHSIG = 1
# Modules a step imports on its way to STEP_START (measured: they are most of a forked step's own
# start-up): Dagster, the instance a step opens from its ref, its storage and compute-log manager,
# and the filesystem libraries of Dagster's default IO manager.
WARM_IMPORTS = (
    "dagster",
    "dagster._cli.api",
    "dagster._core.definitions.reconstruct",
    "dagster._core.instance.factory",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.root",
    "dagster._core.storage.migration.utils",
    "dagster._core.system_config.composite_descent",
    "upath",
    "upath.implementations.local",
    "fsspec.implementations.local",
    "importlib.resources.readers",
    "watchdog.observers.polling",
    "watchdog.utils.dirsnapshot",
)
REQUEST_LIMIT = 64 << 20  # bytes: a request carries the step's compressed args


class Warmth:
    """The code location this server has imported, and the files whose change makes it stale."""

    def __init__(self) -> None:
        self.location = None  # the repository origin's code pointer, once imported
        self.mtimes: dict[str, float] = {}
        self.stale = False  # the code changed: stop once the running children are done, to be restarted

    def check(self, compressed_args: str) -> str | None:
        """Imports the step's code location on first sight; returns why the step must run cold, or None."""
        import base64
        import zlib

        from dagster._grpc.types import ExecuteStepArgs
        from dagster._serdes import deserialize_value
        from dagster._utils.hosted_user_process import recon_repository_from_origin

        args = deserialize_value(zlib.decompress(base64.b64decode(compressed_args)).decode(), ExecuteStepArgs)
        origin = args.job_origin.repository_origin
        if self.location is None:
            before = set(sys.modules)
            recon_repository_from_origin(origin).get_definition()
            self.location = _location(origin.code_pointer)
            self.mtimes = _user_files(set(sys.modules) - before)
        if _location(origin.code_pointer) != self.location:
            return "the step belongs to another code location than the one this server imported"
        if self.stale or any(_mtime(path) != mtime for path, mtime in self.mtimes.items()):
            self.stale = True
            return "the code location's files changed since this server imported them"
        if threading.active_count() > 1:
            return "a thread runs in the step server (its code location started one): forking would copy it half-done"
        return None


def _location(pointer) -> tuple:
    """The file or module a code pointer loads, whatever attribute of it names the definitions: the jobs
    of one file share what the server imported for any of them."""
    source = getattr(pointer, "python_file", None) or getattr(pointer, "module", None)
    return (type(pointer).__name__, source, getattr(pointer, "working_directory", None))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def _user_files(module_names: set[str]) -> dict[str, float]:
    """The source files of newly imported modules outside the interpreter's own directories."""
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    files = {}
    for name in module_names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and not path.startswith(prefixes):
            files[path] = _mtime(path)
    return files


def run_child(conn: socket.socket, listener: socket.socket, stdout_fd: int, request: dict) -> None:
    """In the forked child: become a session leader, take the task's output pipe and environment, run."""
    code = 1
    try:
        os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the server died before prctl took effect
            os._exit(1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        conn.close()
        listener.close()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the server's stdin is the worker's stop signal
        os.dup2(stdout_fd, 1)
        os.dup2(stdout_fd, 2)
        os.close(stdout_fd)
        os.environ.update(request["env"])
        execute_step(request["args"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def read_request(conn: socket.socket) -> tuple[dict, int]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request must carry exactly one file descriptor (the output pipe)")
    chunks = [data]
    while not data.endswith(b"\n"):
        data = conn.recv(1 << 16)
        if not data or sum(map(len, chunks)) > REQUEST_LIMIT:
            os.close(fds[0])
            raise ValueError("request truncated or too large")
        chunks.append(data)
    return json.loads(b"".join(chunks)), fds[0]


def send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the worker went away; the child's fate is reported by its process group


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD reaches the wake-up fd
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    warmth = Warmth()
    children: dict[int, socket.socket] = {}  # pid → its task's connection
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(json.dumps({"ready": os.getpid()}), flush=True)

    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not sys.stdin.buffer.read1(1 << 10):
                    return  # the worker closed our stdin: stop
            elif key.data == "wake":
                os.read(wake_r, 1 << 10)
                reap(children)
            else:
                conn, _ = listener.accept()
                handle(conn, listener, warmth, children)
        if warmth.stale and not children:
            print("step server: the code location changed; exiting to be restarted", flush=True)
            return


def handle(conn: socket.socket, listener: socket.socket, warmth: Warmth, children: dict) -> None:
    conn.settimeout(10)
    try:
        request, stdout_fd = read_request(conn)
    except (OSError, ValueError) as e:
        send(conn, {"error": f"bad request: {e}"})
        conn.close()
        return
    try:
        try:
            reason = warmth.check(request["args"])
        except Exception as e:
            reason = f"could not import the step's code location in the server: {e}"
        if reason:
            send(conn, {"cold": reason})
            conn.close()
            return
        # What the server holds is never garbage: keep the collector off those pages, so that a
        # child does not copy them by touching them.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            run_child(conn, listener, stdout_fd, request)
        children[pid] = conn
        send(conn, {"pid": pid})
    finally:
        os.close(stdout_fd)


def reap(children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            send(conn, {"exit": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else -1})
            conn.close()


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m dagster_taskiq_go.step_server SOCKET")
    # What every step needs, imported once here instead of once per step.
    for module in WARM_IMPORTS:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # only a head start: a step imports what it needs anyway

    if threading.active_count() > 1:
        sys.exit("step server: a thread exists after importing Dagster; forking would be unsafe")
    serve(argv[1])


if __name__ == "__main__":
    main(sys.argv)
