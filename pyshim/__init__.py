"""Python side of the bridge to the Go core.

Loads the gopy-built module lazily (importing ``dagster_taskiq_go`` stays cheap and fork-safe until
the first call), passes JSON strings across, and turns the Go core's ``"<code>: <message>"`` errors
into exception classes.
"""

import json
import os
import threading
from typing import Any

from .errors import TaskiqError, from_native_error

__all__ = ["TaskiqError", "call", "call_json", "is_loaded", "native"]

_module = None
_lock = threading.Lock()
_synced_env: dict[str, str] | None = None
# The Go core reads credentials, region and the signing key from these variables.
_ENV_PREFIXES = ("AWS_", "DAGSTER_TASKIQ_")

# The Go runtime runs threads from the moment the module loads; a forked child inherits none of
# them and hangs on its first Go call. Fail fast and loudly instead.
_FORK_MESSAGE = (
    b"dagster-taskiq-go: this process forked after loading the Go core, which cannot work in the "
    b"child (it would hang). Use subprocess or a 'spawn' multiprocessing context instead.\n"
)


def _refuse_forked_child() -> None:
    os.write(2, _FORK_MESSAGE)
    os._exit(70)


def native():
    """Returns the gopy module, loading it on first use."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                from dagster_taskiq_go._native import gobridge

                os.register_at_fork(after_in_child=_refuse_forked_child)
                _module = gobridge
    return _module


def is_loaded() -> bool:
    return _module is not None


def _sync_env(module) -> None:
    """Hands Python's current AWS_*/DAGSTER_TASKIQ_* variables to Go when they changed.

    A Go library copies the environment once, at load; later os.environ changes would not reach it.
    """
    global _synced_env
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    if env != _synced_env:
        try:
            module.SyncEnv(json.dumps(env))
        except RuntimeError as exc:
            raise from_native_error(str(exc)) from None
        _synced_env = env


def call(name: str, *args: Any) -> Any:
    """Calls a facade function; Go errors become TaskiqError subclasses."""
    module = native()
    _sync_env(module)
    fn = getattr(module, name)
    try:
        return fn(*args)
    except RuntimeError as exc:
        raise from_native_error(str(exc)) from None


def call_json(name: str, *args: Any) -> Any:
    """Calls a facade function that returns JSON and decodes it."""
    return json.loads(call(name, *args))
