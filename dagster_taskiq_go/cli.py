"""The ``dagster-taskiq-go`` command: workers, queues and the local dev loop."""

import functools
import json
import os
import signal
import sys

import click
import yaml

from dagster_taskiq_go.version import __version__

LOG_LEVELS = ("debug", "info", "warn", "error")
_FROM_ENV = "dagster_taskiq.from_env"  # ctx.meta key: option name → the variable that set it


class _Option(click.Option):
    """An option that says which environment variable set it when its value is refused: a user who
    never typed --concurrency must learn that DAGSTER_TASKIQ_WORKER_START_CONCURRENCY is to blame."""

    def consume_value(self, ctx, opts):
        value, source = super().consume_value(ctx, opts)
        if source == click.core.ParameterSource.ENVIRONMENT:
            names = [self.envvar] if isinstance(self.envvar, str) else list(self.envvar or ())
            if ctx.auto_envvar_prefix and self.name:
                names.append(f"{ctx.auto_envvar_prefix}_{self.name.upper()}")
            ctx.meta.setdefault(_FROM_ENV, {})[self.name] = next((n for n in names if os.environ.get(n)), names[0])
        return value, source

    def process_value(self, ctx, value):
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as exc:
            if name := ctx.meta.get(_FROM_ENV, {}).get(self.name):
                exc.message = f"{exc.message} (set by {name})"
            raise


option = functools.partial(click.option, cls=_Option)


def _usage_error(message: str) -> click.UsageError:
    """A usage error from the core, naming the environment variables behind the options it names."""
    ctx = click.get_current_context(silent=True)
    params = {p.name: p for p in ctx.command.params} if ctx else {}
    for name, variable in (ctx.meta.get(_FROM_ENV, {}) if ctx else {}).items():
        param = params.get(name)
        if param is not None and (f'"{name}"' in message or any(o in message for o in param.opts)):
            message += f" ({param.opts[-1]} was set by {variable})"
    return click.UsageError(message)


def transport_options(fn):
    """Options shared by every command that talks to SQS/S3 (the executor's core config keys)."""

    @option(
        "-y",
        "--config-yaml",
        type=click.Path(exists=True, dir_okay=False),
        help="YAML file with the executor's config keys (s3_bucket, endpoint_url, ...).",
    )
    @option("--s3-bucket", envvar="DAGSTER_TASKIQ_S3_BUCKET", help="Bucket for task state.")
    @option("--s3-prefix", envvar="DAGSTER_TASKIQ_S3_PREFIX", help="Key prefix in the bucket.")
    @option("--endpoint-url", envvar="DAGSTER_TASKIQ_ENDPOINT_URL", help="SQS and S3 endpoint (emulators).")
    @option("--region", "region_name", envvar="DAGSTER_TASKIQ_REGION", help="AWS region.")
    @option("--queue-prefix", envvar="DAGSTER_TASKIQ_QUEUE_PREFIX", help="Prefix of SQS queue names.")
    @option(
        "--aws-retry-max-seconds",
        type=int,
        envvar="DAGSTER_TASKIQ_AWS_RETRY_MAX_SECONDS",
        help="How long one SQS/S3 call retries before failing (default 60).",
    )
    @functools.wraps(fn)
    def wrapper(config_yaml, **kwargs):
        config = {}
        if config_yaml:
            with open(config_yaml) as f:
                config = yaml.safe_load(f) or {}
            if not isinstance(config, dict):
                raise click.BadParameter("must hold a mapping of config keys", param_hint="--config-yaml")
        for key in ("s3_bucket", "s3_prefix", "endpoint_url", "region_name", "queue_prefix", "aws_retry_max_seconds"):
            value = kwargs.pop(key)
            if value is not None:
                config[key] = value
        return fn(core_config=_core_config(config), **kwargs)

    return wrapper


def _core_config(config: dict) -> str:
    from dagster_taskiq_go._pyshim.errors import TaskiqConfigError
    from dagster_taskiq_go.config import core_config_json

    try:
        return core_config_json(config)
    except TaskiqConfigError as exc:
        raise _usage_error(str(exc)) from None


# Every option can also come from the environment: DAGSTER_TASKIQ_<COMMAND>_<OPTION>, e.g.
# DAGSTER_TASKIQ_WORKER_START_CONCURRENCY=4 (transport options use the shorter DAGSTER_TASKIQ_<OPTION>).
@click.group(context_settings={"auto_envvar_prefix": "DAGSTER_TASKIQ", "show_default": True})
@click.version_option(__version__, prog_name="dagster-taskiq-go")
def main():
    """Run Dagster steps and runs on worker fleets through AWS SQS.

    Options can be set in the environment as DAGSTER_TASKIQ_<COMMAND>_<OPTION>, for example
    DAGSTER_TASKIQ_WORKER_START_CONCURRENCY=4.
    """


@main.group()
def worker():
    """Start and inspect workers."""


@worker.command("start")
@option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    default=["dagster"],
    show_default=True,
    help="Queue to serve (repeatable).",
)
@option("-c", "--concurrency", type=int, default=1, show_default=True, help="Step slots.")
@option(
    "--run-concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Run slots (TaskiqRunLauncher runs), a pool apart from step slots; 0 takes no runs.",
)
@option(
    "--anti-starvation-weight",
    type=int,
    default=10,
    show_default=True,
    help="After this many tasks in a row from the top band, poll a lower band first once; 0 is strict priority.",
)
@option("-n", "--name", default="", help="Worker name (default: the host name); a unique suffix is added.")
@option("--poll-wait", type=int, default=20, show_default=True, help="SQS long-poll wait, seconds (1-20).")
@option(
    "--heartbeat-interval",
    type=int,
    default=5,
    show_default=True,
    help="Seconds between lease renewals and cancel checks.",
)
@option(
    "--grace-period",
    type=int,
    default=30,
    show_default=True,
    help="Seconds a task may run after SIGTERM (and a graceful stop waits) before SIGKILL.",
)
@option(
    "--python",
    "python",
    type=click.Path(exists=True, dir_okay=False),
    help="Interpreter that runs tasks (default: this one); it needs dagster, your code and dagster-taskiq-go.",
)
@option(
    "--step-process",
    type=click.Choice(["warm", "cold"]),
    default="warm",
    show_default=True,
    help="warm: fork steps from a server that has imported Dagster and your code; cold: a fresh interpreter per step.",
)
@option(
    "--insecure-no-signing",
    is_flag=True,
    help="Accept unsigned tasks. Anyone able to send to the queue can then run code here.",
)
@option("-l", "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@transport_options
def worker_start(
    core_config,
    queues,
    concurrency,
    run_concurrency,
    anti_starvation_weight,
    name,
    poll_wait,
    heartbeat_interval,
    grace_period,
    python,
    step_process,
    insecure_no_signing,
    log_level,
):
    """Start a worker that runs tasks from QUEUEs until SIGINT/SIGTERM (a second signal stops at once)."""
    from dagster_taskiq_go._pyshim import call
    from dagster_taskiq_go._pyshim.errors import TaskiqConfigError, TaskiqError

    options = {
        "queues": list(queues),
        "concurrency": concurrency,
        "run_concurrency": run_concurrency,
        "anti_starvation_weight": anti_starvation_weight,
        "name": name,
        "poll_wait_seconds": poll_wait,
        "heartbeat_seconds": heartbeat_interval,
        "grace_period_seconds": grace_period,
        "python": python or sys.executable,
        "insecure_no_signing": insecure_no_signing,
        "step_process": step_process,
    }
    try:
        handle = call("WorkerStart", core_config, json.dumps(options), log_level)
    except TaskiqConfigError as exc:
        raise _usage_error(str(exc)) from None
    except TaskiqError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"worker {call('WorkerID', handle)} serving {', '.join(queues)}", err=True)

    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        # The first signal drains; the second stops running tasks at once.
        call("WorkerStop", handle, len(signals) == 1)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Wait in short slices: a blocking Go call would delay signal handling until it returns.
    while True:
        summary = call("WorkerWait", handle, 250)
        if summary:
            click.echo(f"worker stopped: {summary}", err=True)
            return


def _call_json(name, *args):
    from dagster_taskiq_go._pyshim import call_json
    from dagster_taskiq_go._pyshim.errors import TaskiqError

    try:
        return call_json(name, *args)
    except TaskiqError as exc:
        raise click.ClickException(str(exc)) from None


def _age(timestamp: str) -> str:
    from datetime import datetime, timezone

    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()
    return f"{seconds:.0f}s ago"


@worker.command("list")
@transport_options
def worker_list(core_config):
    """List registered workers: live ones, and stale ones whose heartbeat stopped."""
    workers = sorted(_call_json("Workers", core_config), key=lambda w: w["worker_id"])
    if not workers:
        click.echo("no workers registered")
        return
    click.echo(f"{'WORKER':<32} {'STATE':<9} {'QUEUES':<24} {'BUSY':<7} HEARTBEAT")
    for w in workers:
        state = ("stopping" if w["stopping"] else "live") if w["live"] else "stale"
        busy = f"{len(w['running'] or [])}/{w['slots'] + w['run_slots']}"
        click.echo(f"{w['worker_id']:<32} {state:<9} {','.join(w['queues']):<24} {busy:<7} {_age(w['heartbeat_at'])}")


@worker.command("status")
@click.argument("name", required=False)
@transport_options
def worker_status(core_config, name):
    """Show workers whose id starts with NAME (all when omitted), with their running tasks."""
    workers = [w for w in _call_json("Workers", core_config) if not name or w["worker_id"].startswith(name)]
    if not workers:
        raise click.ClickException(f"no worker matches {name!r}" if name else "no workers registered")
    for w in sorted(workers, key=lambda w: w["worker_id"]):
        click.echo(f"{w['worker_id']}: {'live' if w['live'] else 'STALE (no heartbeat)'}")
        click.echo(f"  host {w['host']} pid {w['pid']} version {w['version']}, started {_age(w['started_at'])}")
        click.echo(f"  queues {', '.join(w['queues'])}; step slots {w['slots']}, run slots {w['run_slots']}")
        click.echo(f"  heartbeat {_age(w['heartbeat_at'])} (every {w['heartbeat_seconds']}s)")
        for task_id in w["running"] or []:
            click.echo(f"  running {task_id}")


@worker.command("terminate")
@click.argument("name", required=False)
@option("-a", "--all", "all_workers", is_flag=True, help="Terminate every live worker.")
@transport_options
def worker_terminate(core_config, name, all_workers):
    """Stop worker NAME (or every worker whose id starts with NAME) gracefully, through its control queue."""
    if not name and not all_workers:
        raise click.UsageError("name a worker, or pass --all")
    for worker_id in _call_json("WorkerTerminate", core_config, name or "", all_workers):
        click.echo(f"asked {worker_id} to stop")


@main.group()
def queue():
    """Create and inspect queues."""


@queue.command("create")
@click.argument("names", nargs=-1, required=True)
@option(
    "--bands",
    default="high,normal,low",
    show_default=True,
    help="Priority bands, highest first: a subset of high,normal,low that includes normal.",
)
@transport_options
def queue_create(core_config, names, bands):
    """Create queues NAMES (one SQS queue per priority band, and a dead-letter queue) and the bucket."""
    for name in names:
        created = _call_json("QueueCreate", core_config, name, bands)
        for band in created["bands"]:
            click.echo(f"{name}\t{band}\t{created['urls'][band]}")
        click.echo(f"{name}\tdead-letter\t{created['dlq']}")


@queue.command("stats")
@click.argument("names", nargs=-1, required=True)
@transport_options
def queue_stats(core_config, names):
    """Messages visible and in flight per band, dead letters, and the live workers listening."""
    for name in names:
        stats = _call_json("QueueStats", core_config, name)
        click.echo(f"{name}:")
        for band in stats["bands"]:
            click.echo(
                f"  band {band['band']:<7} steps: visible {band['visible']:<5} in flight {band['in_flight']:<5}"
                f" runs: visible {band['runs_visible']:<5} in flight {band['runs_in_flight']}"
            )
        dead = stats["dead_letters"]
        click.echo(f"  dead letters {'(no dead-letter queue)' if dead is None else dead}")
        click.echo(f"  live workers {', '.join(stats['live_workers']) or 'none: tasks here will wait'}")


@queue.command("purge")
@click.argument("name")
@option("--yes", is_flag=True, help="Do not ask for confirmation.")
@transport_options
def queue_purge(core_config, name, yes):
    """Delete every queued message of queue NAME (all bands; dead letters are kept)."""
    from dagster_taskiq_go._pyshim import call
    from dagster_taskiq_go._pyshim.errors import TaskiqError

    if not yes:
        click.confirm(f"Delete every queued task of queue {name!r}?", abort=True)
    try:
        purged = call("QueuePurge", core_config, name)
    except TaskiqError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"purged {name}: {purged} messages were visible")


@main.command()
@option("--workers", type=int, default=2, show_default=True, help="Worker processes to start.")
@option("--keep-running", is_flag=True, help="Keep moto and the workers up after the example run.")
def dev(workers, keep_running):
    """Local demo: moto (SQS+S3), workers and the example job, in one command."""
    from dagster_taskiq_go.dev import run_dev

    sys.exit(run_dev(workers=workers, keep_running=keep_running))
