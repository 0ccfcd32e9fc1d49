"""The fault suite (`make test-faults`): each case injects a fault into real workers, runs and moto, and
reports what it expected and what it observed. The table is printed at the end of the session."""

import pytest

_ROWS: list[tuple[str, str, str, str]] = []


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
    terminalreporter.section("fault suite")
    terminalreporter.write_line(line.format(*headers))
    terminalreporter.write_line(line.format(*("-" * w for w in widths)))
    for row in _ROWS:
        terminalreporter.write_line(line.format(*row))
