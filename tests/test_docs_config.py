"""docs/configuration.md against the real schemas: the executor's and launcher's Dagster config
schemas, the Go core's config_source keys and defaults, and the click commands' parameters. A key
missing from the doc, or one the doc lists that no longer exists, fails here."""

import json
import re
from pathlib import Path

import click
import pytest
import yaml
from click.core import UNSET  # click's "no default"

from dagster_taskiq_go._pyshim import call_json
from dagster_taskiq_go._pyshim.errors import TaskiqConfigError
from dagster_taskiq_go.cli import main, transport_options
from dagster_taskiq_go.executor import executor_config_schema
from dagster_taskiq_go.launcher import TaskiqRunLauncher

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
NONE = "—"


def read_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """Heading (without #'s and backticks) → the rows of the first table under it, as dicts keyed by
    the table's header; the first column's backticks are dropped."""
    sections: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip().replace("`", ""), None
            sections[heading] = []
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("- "):
                row = dict(zip(header, cells, strict=True))
                row[header[0]] = cells[0].strip("`")
                sections[heading].append(row)
    return sections


SECTIONS = read_sections(DOC.read_text())


def rows(heading: str) -> dict[str, dict[str, str]]:
    assert heading in SECTIONS, f"docs/configuration.md has no section {heading!r}"
    table = SECTIONS[heading]
    first = next(iter(table[0])) if table else None
    keyed = {row[first]: row for row in table}
    assert len(keyed) == len(table), f"section {heading!r} lists a key twice"
    return keyed


def documented_default(cell: str):
    """`value` → the YAML value; anything else is not a default value."""
    if cell.startswith("`") and cell.endswith("`"):
        return yaml.safe_load(cell.strip("`"))
    return cell


# Executor and launcher ----------------------------------------------------------------------------


def test_executor_keys_match_the_schema():
    assert set(rows("Executor and run launcher")) == set(executor_config_schema())


def test_launcher_keys_are_those_read_by_the_launcher():
    launcher = {k for k, row in rows("Executor and run launcher").items() if "launcher" in row["read by"]}
    assert launcher == set(TaskiqRunLauncher.config_type())


def test_executor_defaults_match_the_schema():
    for key, field in executor_config_schema().items():
        cell = rows("Executor and run launcher")[key]["default"]
        if field.is_required:
            assert cell == "required", key
        elif field.default_provided:
            assert documented_default(cell) == field.default_value, key
        else:
            assert cell == NONE, key


def go_config_source_keys() -> list[str]:
    """The config_source keys the Go core accepts, from its own error for an unknown key."""
    with pytest.raises(TaskiqConfigError) as raised:
        call_json("ValidateConfig", json.dumps({"s3_bucket": "b", "config_source": {"no_such_key": 1}}))
    return re.search(r"valid keys: (.*)$", str(raised.value)).group(1).split(", ")


def test_config_source_keys_and_defaults_match_the_core():
    documented = rows("config_source")
    assert set(documented) == {f"config_source.{k}" for k in go_config_source_keys()}
    defaults = call_json("ValidateConfig", json.dumps({"s3_bucket": "b"}))["config_source"]
    for key, value in defaults.items():
        assert documented_default(documented[f"config_source.{key}"]["default"]) == value, key


# Command line ------------------------------------------------------------------------------------

TRANSPORT = {p.name for p in transport_options(lambda core_config: None).__click_params__}


def commands() -> dict[str, tuple[click.Command, click.Context]]:
    """Every leaf command by path ("worker start"), with the context click gives it (env prefixes)."""
    found = {}

    def walk(cmd, ctx, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, click.Context(sub, parent=ctx, info_name=name), [*path, name])
        else:
            found[" ".join(path)] = (cmd, ctx)

    walk(main, click.Context(main, info_name="dagster-taskiq-go", auto_envvar_prefix="DAGSTER_TASKIQ"), [])
    return found


def doc_key(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return max(param.opts, key=len)


def test_every_command_has_a_section_and_no_stale_one():
    documented = [h for h in SECTIONS if h in commands() or h == "Transport options"]
    cli_sections = list(SECTIONS)[list(SECTIONS).index("Command line") + 1 :]
    assert cli_sections == documented, "every section after 'Command line' names a real command"
    assert set(documented) == {*commands(), "Transport options"}


def test_transport_options_match():
    assert set(rows("Transport options")) == {
        doc_key(p) for p in main.commands["worker"].commands["start"].params if p.name in TRANSPORT
    }
    for path, (cmd, _) in commands().items():
        has = {p.name for p in cmd.params} & TRANSPORT
        assert has in (set(), TRANSPORT), f"{path} takes some transport options only: {has}"


@pytest.mark.parametrize("path", sorted(commands()))
def test_command_options_match(path, monkeypatch):
    cmd, ctx = commands()[path]
    own = [p for p in cmd.params if p.name not in TRANSPORT]
    documented = rows(path)
    assert set(documented) == {doc_key(p) for p in own}
    transport = [p for p in cmd.params if p.name in TRANSPORT]
    command_env = path.upper().replace(" ", "_")
    for param in own + transport:
        row = (documented if param in own else rows("Transport options"))[doc_key(param)]
        shorts = {o for o in param.opts if not o.startswith("--")} if isinstance(param, click.Option) else set()
        assert set(filter(None, [row["short"].strip("`")])) == shorts, param.name
        if isinstance(param, click.Argument):
            assert row["default"] == ("required" if param.required else NONE), param.name
            assert row["environment"] == NONE, param.name
            continue
        default = documented_default(row["default"])
        if param.multiple and default != NONE:
            default = [default]
        if param.default is None or param.default is UNSET:
            assert default == NONE, param.name
        else:
            assert default == (list(param.default) if param.multiple else param.default), param.name
        # The documented variable really sets the option.
        variable = row["environment"].strip("`").replace("<COMMAND>", command_env)
        monkeypatch.setenv(variable, "1")
        assert param.value_from_envvar(ctx) is not None, f"{variable} does not set {path} {doc_key(param)}"
        monkeypatch.delenv(variable)
