"""Exception classes for the Go core's error codes."""


class TaskiqError(Exception):
    """Base class of every error raised by the Go core."""

    code = "internal"


class TaskiqConfigError(TaskiqError, ValueError):
    """Invalid configuration; the message names the key."""

    code = "config"


class TaskiqNotFoundError(TaskiqError, LookupError):
    """A queue, task or object does not exist."""

    code = "not_found"


class TaskiqTransportError(TaskiqError, ConnectionError):
    """SQS or S3 could not be reached or refused the call."""

    code = "transport"


class TaskiqPayloadError(TaskiqError):
    """A message or payload is malformed or unauthenticated."""

    code = "payload"


class TaskiqCanceledError(TaskiqError):
    """The operation was canceled."""

    code = "canceled"


class TaskiqInternalError(TaskiqError):
    """A bug in the Go core, including a recovered panic."""

    code = "internal"


_BY_CODE = {
    cls.code: cls
    for cls in (
        TaskiqConfigError,
        TaskiqNotFoundError,
        TaskiqTransportError,
        TaskiqPayloadError,
        TaskiqCanceledError,
        TaskiqInternalError,
    )
}


def from_native_error(text: str) -> TaskiqError:
    """Maps ``"<code>: <message>"`` to an exception; an unknown code is an internal error."""
    code, sep, message = text.partition(": ")
    cls = _BY_CODE.get(code) if sep else None
    if cls is None:
        return TaskiqInternalError(text)
    return cls(message)
