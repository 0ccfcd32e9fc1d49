"""The gopy bridge: every facade function is bound, panics and errors become exceptions, loading is
lazy, the cwd is never touched, and a fork after loading fails loudly instead of hanging."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from dagster_taskiq_go._pyshim import call, native
from dagster_taskiq_go._pyshim.errors import (
    TaskiqConfigError,
    TaskiqError,
    TaskiqInternalError,
    TaskiqNotFoundError,
    TaskiqTransportError,
    from_native_error,
)
from dagster_taskiq_go.version import __version__

FACADE = os.path.join(os.path.dirname(__file__), "..", "gobridge", "gobridge.go")


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_every_facade_function_is_bound():
    with open(FACADE) as f:
        exported = re.findall(r"^func ([A-Z]\w*)\(", f.read(), re.M)
    assert len(exported) >= 10
    missing = [name for name in exported if not callable(getattr(native(), name, None))]
    assert missing == [], f"gopy dropped these facade functions: {missing}"


def test_native_version_matches_package():
    import dagster_taskiq_go

    assert dagster_taskiq_go.native_version() == __version__


def test_go_panic_becomes_python_exception():
    with pytest.raises(TaskiqInternalError, match="panic in Go core: kaboom"):
        call("Crash", "kaboom")
    # The interpreter and the Go runtime are still usable afterwards.
    assert call("Version") == __version__


def test_malformed_config_raises_typed_error_naming_the_key():
    from dagster_taskiq_go.config import core_config_json

    with pytest.raises(TaskiqConfigError, match='unknown key "config_source.no_such_knob"') as info:
        core_config_json({"s3_bucket": "b", "config_source": {"no_such_knob": 1}})
    assert "payload_threshold_bytes" in str(info.value)  # the valid choices are listed
    with pytest.raises(TaskiqConfigError, match='"config_source.heartbeat_interval_seconds" is a worker-side'):
        core_config_json({"s3_bucket": "b", "config_source": {"heartbeat_interval_seconds": 5}})
    with pytest.raises(TaskiqConfigError, match='"s3_bucket" is required'):
        core_config_json({})
    # Keys outside the schema reach the core too (the worker CLI's config file has no Dagster schema).
    with pytest.raises(TaskiqConfigError, match='unknown key "config_sourc"; valid keys: region_name'):
        core_config_json({"s3_bucket": "b", "config_sourc": {}})
    with pytest.raises(TaskiqConfigError, match='key "config_source.max_queue_wait_seconds": environment variable'):
        core_config_json({"s3_bucket": "b", "config_source": {"max_queue_wait_seconds": {"env": "TASKIQ_UNSET_VAR"}}})


@pytest.mark.parametrize(
    ("text", "cls", "message"),
    [
        ("config: bad key", TaskiqConfigError, "bad key"),
        ("not_found: no queue", TaskiqNotFoundError, "no queue"),
        ("transport: refused: x", TaskiqTransportError, "refused: x"),
        ("weird: thing", TaskiqInternalError, "weird: thing"),
        ("no code at all", TaskiqInternalError, "no code at all"),
    ],
)
def test_error_codes_map_to_exception_classes(text, cls, message):
    err = from_native_error(text)
    assert type(err) is cls and isinstance(err, TaskiqError)
    assert str(err) == message


def test_import_is_lazy_and_cheap():
    result = run_python(
        """
        import sys, dagster_taskiq_go
        from dagster_taskiq_go import _pyshim
        print("dagster" in sys.modules, _pyshim.is_loaded())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_cwd_unchanged_during_and_after_load(tmp_path):
    result = run_python(
        """
        import os, threading
        start = os.getcwd()
        seen = set()
        done = threading.Event()
        def watch():
            while not done.is_set():
                seen.add(os.getcwd())
        t = threading.Thread(target=watch); t.start()
        from dagster_taskiq_go._pyshim import call
        call("Version")
        done.set(); t.join()
        print(seen == {start}, os.getcwd() == start)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_fork_after_load_fails_loudly():
    result = run_python(
        """
        import os
        from dagster_taskiq_go._pyshim import call
        call("Version")
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # never reached: the at-fork hook ends the child first
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "70"
    assert "forked after loading the Go core" in result.stderr


def test_fork_before_load_is_fine():
    result = run_python(
        """
        import os
        import dagster_taskiq_go
        pid = os.fork()
        if pid == 0:
            from dagster_taskiq_go._pyshim import call
            os._exit(0 if call("Version") else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
