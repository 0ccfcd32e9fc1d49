"""The fault suite (`make test-faults`): each case injects a fault into real workers, runs and moto, and
reports what it expected and what it observed. The table is printed at the end of the session.

FAULT_STEP_PROCESS (warm, the default, or cold) is how every worker the suite starts makes its step
processes: `make test-faults` runs the suite once for each."""

import os

import pytest

STEP_PROCESS = os.environ.get("FAULT_STEP_PROCESS", "warm")

_ROWS: list[tuple[str, str, str, str]] = []


@pytest.fixture(scope="session", autouse=True)
def step_process():
    """Workers read `worker start` options from the environment (DAGSTER_TASKIQ_WORKER_START_<OPTION>)."""
    if STEP_PROCESS not in ("warm", "cold"):
        raise pytest.UsageError(f"FAULT_STEP_PROCESS={STEP_PROCESS!r}: use warm or cold")
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_TASKIQ_WORKER_START_STEP_PROCESS", STEP_PROCESS)
    yield STEP_PROCESS
    patch.undo()


@pytest.fixture
def fault_report(request):
    """report(fault, expected, observed): one table row for the running case (its test id)."""

    def report(fault: str, expected: str, observed: str) -> None:
        _ROWS.append((request.node.name, fault, expected, observed))

    return report


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    headers = ("case", "injected fault", "expected outcome", "observed outcome")
    widths = [max(len(h), *(len(r[i]) for r in _ROWS)) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    terminalreporter.section(f"fault suite (step processes: {STEP_PROCESS})")
    terminalreporter.write_line(line.format(*headers))
    terminalreporter.write_line(line.format(*("-" * w for w in widths)))
    for row in _ROWS:
        terminalreporter.write_line(line.format(*row))
