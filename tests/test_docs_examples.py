"""Runs the examples of the README and docs/ (and the examples' READMEs) as far as they run locally:

- `python` blocks are executed and their jobs loaded as Dagster definitions, with each taskiq
  executor's config resolved by Dagster and validated by the Go core;
- `yaml` blocks are validated with the real schema they belong to: a dagster.yaml by Dagster's
  instance schema (TaskiqRunLauncher is built from it, other configurable classes validate their
  config), run config and executor config files by the executor's schema and the Go core;
- `json` blocks are parsed;
- `sh` blocks run in bash against moto, with `dagster-taskiq-go worker start` started, awaited until
  it serves, and stopped with SIGTERM.

Anything else must be marked `<!-- not-run: reason -->` on the line before its fence; an unmarked
block that cannot run fails the suite.
"""

import json
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("examples/*/README.md"))]
RUNNABLE = ("python", "yaml", "json", "sh")
NOT_RUN = re.compile(r"^<!-- not-run: (?P<reason>\S.*\S) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    blocks, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(previous)
        blocks.append(Block(path, start + 1, fence["lang"], "\n".join(body) + "\n", marker and marker["reason"]))
        i += 1
    return blocks


BLOCKS = [b for path in DOCS for b in read_blocks(path)]
TO_RUN = [b for b in BLOCKS if b.not_run is None]


def test_the_docs_have_examples_to_run():
    assert set(RUNNABLE) <= {b.lang for b in TO_RUN}, "each kind of example runs somewhere"


def test_every_block_runs_or_is_marked():
    unrunnable = [f"{b.name} ({b.lang or 'no language'})" for b in TO_RUN if b.lang not in RUNNABLE]
    assert not unrunnable, f"mark these <!-- not-run: reason --> or make them runnable: {unrunnable}"


# Python ------------------------------------------------------------------------------------------


def load_python(block: Block, tmp_path: Path) -> None:
    from dagster import Definitions, JobDefinition
    from dagster._core.system_config.objects import ResolvedRunConfig

    from dagster_taskiq_go.config import core_config_json

    source = tmp_path / "example.py"
    source.write_text(block.text)
    namespace = runpy.run_path(str(source))
    jobs = [v for v in namespace.values() if isinstance(v, JobDefinition)]
    assert jobs, "the example defines no job"
    Definitions.validate_loadable(Definitions(jobs=jobs))
    for job in jobs:
        if job.executor_def.name == "taskiq":
            resolved = ResolvedRunConfig.build(job, {}).execution.execution_engine_config
            core_config_json(resolved)


# YAML --------------------------------------------------------------------------------------------


def validate_executor_config(config: dict) -> None:
    from dagster._config import process_config

    from dagster_taskiq_go.config import core_config_json
    from dagster_taskiq_go.executor import taskiq_executor

    result = process_config(taskiq_executor.config_schema.config_type, config)
    assert result.success, result.errors
    core_config_json(result.value)


def validate_dagster_yaml(config: dict, tmp_path: Path) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer

    from dagster_taskiq_go.launcher import TaskiqRunLauncher

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_instance_config(str(tmp_path))  # Dagster's own schema; raises naming the bad key
    for key, value in config.items():
        if not (isinstance(value, dict) and {"module", "class"} <= set(value)):
            continue
        data = ConfigurableClassData(value["module"], value["class"], yaml.safe_dump(value.get("config") or {}))
        cls = class_from_code_pointer(value["module"], value["class"])
        if cls is TaskiqRunLauncher:
            data.rehydrate(TaskiqRunLauncher)  # builds it: the Go core validates every value
        else:
            result = process_config(cls.config_type(), data.config_dict)
            assert result.success, f"{key}: {result.errors}"


def validate_yaml(block: Block, tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config_schema

    from dagster_taskiq_go.executor import executor_config_schema

    config = yaml.safe_load(block.text)
    assert isinstance(config, dict), "a YAML example is a mapping"
    if set(config) <= set(dagster_instance_config_schema()):
        validate_dagster_yaml(config, tmp_path)
    elif set(config) == {"execution"}:
        validate_executor_config(config["execution"]["config"])
    elif set(config) <= set(executor_config_schema()):
        validate_executor_config(config)
    else:
        pytest.fail(f"not a dagster.yaml, run config or executor config: keys {sorted(config)}")


# Shell -------------------------------------------------------------------------------------------

# `worker start` serves until stopped: start it, wait until it serves, then stop it as systemd would.
SHELL_PRELUDE = r"""
set -euo pipefail
dagster-taskiq-go() {
  if [ "${1-}" = worker ] && [ "${2-}" = start ]; then
    local log pid
    log=$(mktemp)
    command dagster-taskiq-go "$@" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
      if grep -q "worker started" "$log"; then kill -TERM "$pid"; wait "$pid"; return; fi
      if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; wait "$pid"; return 1; fi
      sleep 0.1
    done
    kill -KILL "$pid"; cat "$log" >&2; return 1
  fi
  command dagster-taskiq-go "$@"
}
"""


def run_shell(block: Block, moto_endpoint: str, tmp_path: Path) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "DAGSTER_TASKIQ_ENDPOINT_URL": moto_endpoint,
        # Each block gets queues of its own, so blocks cannot depend on one another.
        "DAGSTER_TASKIQ_QUEUE_PREFIX": f"doc{uuid.uuid4().hex[:8]}-",
        "DAGSTER_TASKIQ_SIGNING_KEY": "docs-example-signing-key-0123456789",
    }
    proc = subprocess.Popen(
        ["bash", "-c", SHELL_PRELUDE + block.text],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its workers share its process group
    )
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output


@pytest.mark.parametrize("block", [b for b in TO_RUN if b.lang in RUNNABLE], ids=lambda b: b.name)
def test_example_runs(block, moto_endpoint, monkeypatch):
    with tempfile.TemporaryDirectory(prefix="docs-example-") as tmp:
        tmp_path = Path(tmp)
        # The environment a deployment would give the code: {env: VAR} values resolve from it.
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "DAGSTER_TASKIQ_S3_BUCKET": "docs-example-bucket",
            "DAGSTER_TASKIQ_ENDPOINT_URL": moto_endpoint,
        }.items():
            monkeypatch.setenv(name, value)
        if block.lang == "python":
            load_python(block, tmp_path)
        elif block.lang == "yaml":
            validate_yaml(block, tmp_path)
        elif block.lang == "json":
            json.loads(block.text)
        else:
            run_shell(block, moto_endpoint, tmp_path)


# Links -------------------------------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an external address
            file, _, anchor = target.partition("#")
            resolved = (doc.parent / file).resolve() if file else doc
            if not resolved.exists() or (anchor and anchor not in anchors(resolved)):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken
