"""``whistle bench`` / ``python -m bench``: throughput and latency against the broker's limit."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import click

from bench.defaults import BASELINE_MESSAGES, FLAT_OUT_ISSUES


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected rates like 50,100,200, got {text!r}") from None


@click.command()
@click.option("--rates", default="50,100,200", show_default=True,
              help="Fixed rates to offer, issues/s, comma-separated ('' for none).")
@click.option("--duration", "duration_s", type=float, default=10.0, show_default=True,
              help="Seconds each fixed rate is offered for.")
@click.option("--flat-out", type=int, default=FLAT_OUT_ISSUES, show_default=True,
              help="Issues to submit flat out (0: skip the flat-out phases).")
@click.option("--concurrency", type=int, default=8, show_default=True,
              help="Submitters (keep-alive HTTP connections) when flat out.")
@click.option("--instances", multiple=True, default=("1",), show_default=True,
              help="Processes per service: N, or SERVICE=N (repeatable, or comma-separated).")
@click.option("--scale-busiest/--no-scale-busiest", default=True, show_default=True,
              help="After flat out, add an instance of the service that used the most CPU "
                   "and go flat out again.")
@click.option("--baseline-messages", type=int, default=BASELINE_MESSAGES, show_default=True,
              help="Messages pushed through the broker baseline's four hops.")
@click.option("--framework-floor/--no-framework-floor", default=True, show_default=True,
              help="Also push the baseline's messages through the same four hops done by "
                   "nameko with empty handlers: the most a nameko chain carries here.")
@click.option("--warmup", type=int, default=20, show_default=True,
              help="Issues submitted (and not reported) before the first phase.")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Sample every service with py-spy during the first flat-out "
                                 "phase; collapsed stacks go to this directory.")
@click.option("--logs", "log_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Keep the services' logs in this directory.")
@click.option("--queue-type", type=click.Choice(["classic", "quorum"]), default="classic",
              show_default=True,
              help="The queues Whistle (and the baseline's hops) run on: WHISTLE_QUEUE_TYPE. "
                   "For a cluster, list its nodes in AMQP_URI (docs/benchmarks.md).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the whole report as JSON to this file.")
def bench(rates, duration_s, flat_out, concurrency, instances, scale_busiest, baseline_messages,
          framework_floor, warmup, profile_dir, log_dir, queue_type, json_path) -> None:
    """Benchmark Whistle against the local RabbitMQ and Redis, and the broker's own limit.

    Runs in a throwaway vhost and Redis key prefix, both removed afterwards. Exits 1
    if any issue failed, got lost or left an error behind. Ctrl-C, SIGTERM or SIGHUP
    stop it after the same cleanup, with status 128 + the signal (SIGTERM: 143).
    """
    from bench.cluster import parse_instances
    from bench.report import render
    from bench.run import Options, run
    from bench.signals import StopOnSignals

    try:
        counts = parse_instances(instances)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--instances") from None
    options = Options(rates=_floats(rates), duration_s=duration_s, flat_out=flat_out,
                      concurrency=concurrency, instances=counts, scale_busiest=scale_busiest,
                      baseline_messages=baseline_messages, framework_floor=framework_floor,
                      warmup=warmup,
                      profile_dir=profile_dir, log_dir=log_dir)
    # The whole run's: the services and the baseline's hop processes inherit it.
    os.environ["WHISTLE_QUEUE_TYPE"] = queue_type
    stopper = StopOnSignals()
    try:
        with stopper:
            report = run(options, say=lambda line: click.echo(f"bench: {line}", err=True))
    except BaseException as exc:
        if not stopper.stopped:
            raise
        _exit_stopped(stopper.signum, exc)
    if stopper.stopped:  # after the run had finished: its report is not printed
        _exit_stopped(stopper.signum, None)
    ctx = click.get_current_context()
    args = sys.argv[2:] if ctx.parent is not None else sys.argv[1:]  # `whistle bench ...`
    report["command"] = f"{ctx.command_path} {shlex.join(args)}".strip()
    if json_path:
        json_path.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    click.echo(render(report))
    if report["errors"]:
        sys.exit(1)


def _exit_stopped(signum: int, exc: BaseException | None) -> None:
    """One line saying the run was stopped (and whether stopping went wrong), then exit."""
    from bench.signals import Stopped

    name = signal.Signals(signum).name
    if exc is None or isinstance(exc, Stopped):
        click.echo(f"bench: stopped by {name}; services stopped, vhost and Redis keys removed",
                   err=True)
    else:
        click.echo(f"bench: stopped by {name}; error while stopping, cleanup may be "
                   f"incomplete: {type(exc).__name__}: {exc}", err=True)
    sys.exit(128 + signum)
