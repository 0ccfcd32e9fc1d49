"""The configuration schema shared by ``taskiq_executor``, ``TaskiqRunLauncher`` and the worker CLI.

Dagster checks the shape and resolves ``{env: VAR}``; the Go core checks every value and rejects
unknown ``config_source`` keys, naming the key and the valid choices.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

from dagster import BoolSource, Field, IntSource, Permissive, StringSource

from dagster_taskiq_go._pyshim import call_json


def core_config_schema() -> dict[str, Field]:
    return {
        "region_name": Field(StringSource, is_required=False, description="AWS region; default: the AWS chain."),
        "endpoint_url": Field(
            StringSource, is_required=False, description="SQS and S3 endpoint, for moto/ElasticMQ/LocalStack."
        ),
        "queue_prefix": Field(StringSource, default_value="dagster-", description="Prefix of SQS queue names."),
        "default_queue": Field(
            StringSource, default_value="dagster", description="Queue for tasks that no tag routes."
        ),
        "queue_url": Field(StringSource, is_required=False, description="Send every task to this one queue."),
        "s3_bucket": Field(StringSource, description="Bucket for task records, claims and large payloads."),
        "s3_prefix": Field(StringSource, default_value="dagster-taskiq", description="Key prefix in s3_bucket."),
        "create_missing_queues": Field(
            BoolSource,
            default_value=False,
            description="Create unknown queues on first use instead of failing (off: a typo is an error).",
        ),
        "aws_retry_max_seconds": Field(
            IntSource,
            default_value=60,
            description="How long one SQS/S3 call retries failures before failing (1..100).",
        ),
        "config_source": Field(
            Permissive(),
            is_required=False,
            description="Submit-side knobs: payload_threshold_bytes, max_queue_wait_seconds.",
        ),
    }


# The executor's own keys, which Dagster's executor machinery consumes; every other key is the core's.
EXECUTOR_KEYS = ("retries", "max_concurrent", "tag_concurrency_limits", "poll_interval_seconds")


def _resolve_env(key: str, value: Any) -> Any:
    """Resolves an ``{env: VAR}`` value (Dagster resolves its own *Source fields first; the worker CLI's
    YAML file and config_source values reach here unresolved)."""
    if isinstance(value, Mapping) and set(value) == {"env"}:
        from dagster_taskiq_go._pyshim.errors import TaskiqConfigError

        name = value["env"]
        if name not in os.environ:
            raise TaskiqConfigError(f'invalid configuration: key "{key}": environment variable {name!r} is not set')
        return os.environ[name]
    return value


def core_config_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of the core keys, validated and completed with defaults by the Go core. Keys that
    are neither the core's nor the executor's go to the core too, which rejects them naming the valid
    keys: a typo in a config file must not be dropped in silence."""
    core = {k: _resolve_env(k, v) for k, v in config.items() if k not in EXECUTOR_KEYS and v is not None}
    if isinstance(core.get("config_source"), Mapping):
        core["config_source"] = {k: _resolve_env(f"config_source.{k}", v) for k, v in core["config_source"].items()}
    # The normalized form parses back to itself: every later call hands Go the same string.
    return json.dumps(call_json("ValidateConfig", json.dumps(core, sort_keys=True)), sort_keys=True)
