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

CORE_KEYS = (
    "region_name",
    "endpoint_url",
    "queue_prefix",
    "default_queue",
    "queue_url",
    "s3_bucket",
    "s3_prefix",
    "create_missing_queues",
    "aws_retry_max_seconds",
    "config_source",
)


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
            is_required=False,
            description="How long one SQS/S3 call retries failures before failing (1..100; default 60).",
        ),
        "config_source": Field(
            Permissive(),
            is_required=False,
            description="Submit-side knobs: payload_threshold_bytes, max_queue_wait_seconds.",
        ),
    }


def _resolve_env(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"env"}:
        name = value["env"]
        if name not in os.environ:
            raise ValueError(f"config_source refers to environment variable {name!r}, which is not set")
        return os.environ[name]
    return value


def core_config_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of the core keys, validated and completed with defaults by the Go core."""
    core = {k: config[k] for k in CORE_KEYS if config.get(k) is not None}
    if "config_source" in core:
        core["config_source"] = {k: _resolve_env(v) for k, v in core["config_source"].items()}
    # The normalized form parses back to itself: every later call hands Go the same string.
    return json.dumps(call_json("ValidateConfig", json.dumps(core, sort_keys=True)), sort_keys=True)
