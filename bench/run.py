"""One benchmark run, start to finish; returns the report as a plain dict (JSON-ready).

1. A fresh vhost and Redis prefix (``bench.infra``).
2. The baseline: the broker's own limit for four confirmed hops (``bench.baseline``).
3. The services as separate ``whistle up`` processes (``bench.cluster``), a short
   warm-up, then each fixed rate, then flat out (``bench.load``), each phase drained
   and checked before the next starts (``bench.observe``).
4. Flat out once more with one more instance of the service that used the most CPU.
5. Peak RSS of every process, then everything is stopped and cleaned up. Ctrl-C,
   SIGTERM or SIGHUP stop the run at any point with the same cleanup (``bench.signals``).

Throughput is issues per second *completed*: dispatched to every agency and the
resident's "received" message recorded. Latencies run from the moment a request was
sent to its 201, to dispatched, and to the "received" message being recorded.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import profile
from bench.baseline import NAMEKO_HOP, run_baseline
from bench.cluster import Cluster
from bench.defaults import BASELINE_MESSAGES, FLAT_OUT_ISSUES
from bench.infra import BenchSandbox, Sandbox
from bench.load import Submission, offer
from bench.observe import Observer, QueueSampler, dead_letters
from bench.signals import uninterrupted
from bench.stats import overall_rate, steady_rate, summary_ms
from bench.system import cpu_seconds, infrastructure_pids, machine, machine_busy_seconds
from bench.workload import issue_event_size
from shared import config as cfg
from shared.store import Keys

TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0
TARGET_P99_RATE = 100.0
WARMUP_ISSUES = 20
SETTLE_S = 15.0  # how long a drained phase may take to pass its checks (agency's notes lag)
STALL_S = 30.0  # a drain gives up when nothing completed for this long


@dataclass
class Options:
    rates: list[float] = field(default_factory=lambda: [50.0, 100.0, 200.0])
    duration_s: float = 10.0
    flat_out: int = FLAT_OUT_ISSUES
    concurrency: int = 8
    rate_concurrency: int = 32
    instances: dict[str, int] = field(default_factory=dict)
    scale_busiest: bool = True
    baseline_messages: int = BASELINE_MESSAGES
    framework_floor: bool = True
    warmup: int = WARMUP_ISSUES
    drain_timeout_s: float = 180.0
    profile_dir: Path | None = None
    log_dir: Path | None = None
    service_env: dict[str, str] = field(default_factory=dict)


class CpuMeter:
    """CPU seconds used by every service process, RabbitMQ, Redis and the benchmark itself."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.infra = infrastructure_pids()

    def read(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        readings = dict(self.cluster.cpu_seconds())
        for name, pids in self.infra.items():
            readings[name] = sum(cpu_seconds(pid) or 0.0 for pid in pids)
        readings["bench"] = usage.ru_utime + usage.ru_stime
        # Whatever else ran meanwhile (another test suite, say) shows up as "other".
        readings["other"] = machine_busy_seconds() - sum(readings.values())
        return readings


def redis_calls(client) -> Counter:
    """Commands Redis has executed so far, by name (``INFO commandstats``), for every client."""
    return Counter({name.removeprefix("cmdstat_"): stats["calls"]
                    for name, stats in client.info("commandstats").items()})


class LogWatch:
    """Counts log levels in the services' JSON lines written since the last call."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.offsets: dict[Path, int] = {}

    def since_last(self) -> tuple[Counter, list[str]]:
        levels, samples = Counter(), []
        for process in self.cluster.processes:
            path = process.log_path
            if not path.exists():
                continue
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
            self.offsets[path] = self.offsets.get(path, 0) + len(data)
            for line in data.decode(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                level = entry.get("level", "info")
                levels[level] += 1
                if level in ("warning", "error", "critical") and len(samples) < 5:
                    samples.append(f"{process.name}: {level}: {entry.get('event', '')}"[:300])
        return levels, samples


class Bench:
    def __init__(self, sandbox: Sandbox, cluster: Cluster, observer: Observer, options: Options,
                 run_id: str, say: Callable[[str], None]):
        self.sandbox, self.cluster, self.observer = sandbox, cluster, observer
        self.options, self.run_id, self.say = options, run_id, say
        self.cpu = CpuMeter(cluster)
        self.logs = LogWatch(cluster)
        self.keys = Keys(sandbox.prefix)
        self.next_n = 0

    def phase(self, name: str, count: int, rate: float | None, concurrency: int,
              baseline: float | None, profile_dir: Path | None = None) -> dict:
        self.say(f"{name}: offering {count} issues "
                 + (f"at {rate:g}/s" if rate else f"flat out, {concurrency} submitters"))
        self.logs.since_last()
        redis = self.observer.redis
        cpu_before, calls_before, began = self.cpu.read(), redis_calls(redis), time.time()
        profiler = None
        try:
            with uninterrupted():  # py-spy processes, stopped below even if the run is
                profiler = profile.start(self.cluster.processes, profile_dir) \
                    if profile_dir else None
            with QueueSampler(self.sandbox.amqp_uri) as sampler:
                submissions = offer(self.cluster.intake_urls(), self.run_id, self.next_n,
                                    count, rate, concurrency,
                                    lambda s: self.observer.watch(s.issue_id),
                                    headers=self.cluster.desk_headers())
                self.next_n += count
                accepted = [s for s in submissions if s.accepted]
                incomplete = self.drain([s.issue_id for s in accepted])
            ended = time.time()
            cpu_after, calls = self.cpu.read(), redis_calls(redis) - calls_before
        finally:
            with uninterrupted():
                profiled = profile.stop(profiler) if profiler else None
        unverified = self.verify([s.issue_id for s in accepted])
        levels, samples = self.logs.since_last()
        result = self.figures(name, submissions, rate, concurrency, baseline)
        cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        done = max(result["completed"], 1)
        errors = {
            "http": sum(not s.accepted for s in submissions),
            "incomplete": incomplete,
            "unverified": len(unverified),
            "log_errors": levels["error"] + levels["critical"],
        }
        errors["total"] = sum(errors.values())
        result.update({
            "errors": errors,
            "error_samples": [*unverified[:5], *samples],
            "log_warnings": levels["warning"],
            "wall_s": round(ended - began, 2),
            "cpu_ms_per_issue": {k: round(v * 1000 / done, 2) for k, v in sorted(cpu.items())},
            "cpu_busy_pct": {k: round(v * 100 / (ended - began), 1) for k, v in sorted(cpu.items())},
            "redis_calls_per_issue": {k: round(v / done, 2) for k, v in calls.most_common()
                                      if v / done >= 0.05},
            "queue_peaks": {k: v for k, v in sorted(sampler.peak.items()) if v},
            "cpu_by_service": self._by_service(cpu),
        })
        if profiled is not None:
            result["profile"] = profiled
        self.say(f"{name}: {result['completed']}/{count} completed, "
                 f"{result['throughput']} issues/s, p99 told {result['latency_ms']['told']['p99']} "
                 f"ms, errors {errors['total']}")
        return result

    def _by_service(self, cpu: dict[str, float]) -> dict[str, float]:
        totals: Counter = Counter()
        for process in self.cluster.processes:
            totals[process.service] += cpu.get(process.name, 0.0)
        return {k: round(v, 2) for k, v in totals.items()}

    def drain(self, issue_ids: list[str]) -> int:
        """Wait until every accepted issue completed; how many never did."""
        deadline = time.monotonic() + self.options.drain_timeout_s
        left, last_progress = len(issue_ids), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_progress < STALL_S:
            now_left = sum(self.observer.complete_at(i) is None for i in issue_ids)
            if now_left == 0:
                return 0
            if now_left < left:
                left, last_progress = now_left, time.monotonic()
            time.sleep(0.1)
        return sum(self.observer.complete_at(i) is None for i in issue_ids)

    def verify(self, issue_ids: list[str]) -> list[str]:
        """What is wrong in Redis for these issues, once it had time to settle; [] if nothing.

        Each issue must be dispatched with as many assignments as ``issue.dispatched``
        named, agency must have noted the delivery of each, and its resident's
        "received" message must have been sent.
        """
        deadline = time.monotonic() + SETTLE_S
        while True:
            problems = self._check(issue_ids)
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.5)

    def _check(self, issue_ids: list[str]) -> list[str]:
        problems = []
        redis = self.observer.redis
        for start in range(0, len(issue_ids), 500):
            chunk = issue_ids[start:start + 500]
            pipe = redis.pipeline(transaction=False)
            for issue_id in chunk:
                pipe.hvals(self.keys.notes(issue_id))
            for issue_id, raw, notes in zip(chunk, redis.mget([self.keys.issue(i) for i in chunk]),
                                            pipe.execute(), strict=True):
                record = json.loads(raw) if raw else {}
                agencies = self.observer.agencies.get(issue_id)
                told = self.observer.told.get(issue_id)
                # agency's delivery notes sit beside the record (shared.store, "notes")
                delivered = sum(json.loads(n)["step"] == "assignment_delivered" for n in notes)
                if record.get("status") != "dispatched":
                    problems.append(f"{issue_id}: status {record.get('status')}")
                elif agencies is None or len(record["assignments"]) != agencies:
                    problems.append(f"{issue_id}: assignments differ from issue.dispatched")
                elif delivered != agencies:
                    problems.append(f"{issue_id}: {delivered}/{agencies} deliveries noted")
                elif told is None or told.status != "sent":
                    problems.append(f"{issue_id}: received message {told and told.status}")
        return problems

    def figures(self, name: str, submissions: list[Submission], rate: float | None,
                concurrency: int, baseline: float | None) -> dict:
        accepted = [s for s in submissions if s.accepted]
        observer = self.observer
        completed = {s.issue_id: observer.complete_at(s.issue_id) for s in accepted}
        completed = {k: v for k, v in completed.items() if v is not None}
        sent = [s.sent for s in submissions]
        throughput = steady_rate(list(completed.values())) if rate is None else \
            overall_rate(list(completed.values()), start=min(sent)) if sent else None
        dispatched = [observer.dispatched_at[s.issue_id] - s.sent for s in accepted
                      if s.issue_id in observer.dispatched_at]
        told = [observer.told[s.issue_id].at - s.sent for s in accepted
                if s.issue_id in observer.told]
        return {
            "name": name,
            "mode": "rate" if rate else "flat_out",
            "offered_rate": rate,
            "concurrency": concurrency,
            "instances": dict(self.cluster.counts),
            "submitted": len(submissions),
            "accepted": len(accepted),
            "completed": len(completed),
            "submit_rate": _round(overall_rate(sent)),
            "throughput": _round(throughput),
            "ratio_to_baseline": _ratio(throughput, baseline),
            "latency_ms": {
                "accepted": summary_ms([s.answered - s.sent for s in accepted]),
                "dispatched": summary_ms(dispatched),
                "told": summary_ms(told),
                "complete": summary_ms([completed[s.issue_id] - s.sent for s in accepted
                                        if s.issue_id in completed]),
            },
            "lag_ms": summary_ms([s.sent - s.due for s in submissions if s.due is not None])
            if rate else None,
        }


def run(options: Options, say: Callable[[str], None] = print) -> dict:
    config = cfg.config_from_env()
    sandbox_cm = BenchSandbox(config[cfg.AMQP_URI], config[cfg.REDIS_URL],
                              config[cfg.RABBIT_API_URL])
    run_id = sandbox_cm.run_id
    report: dict = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(sandbox_cm.rabbitmq_version()),
        "queue_type": config[cfg.QUEUE_TYPE],
        "broker_nodes": len(cfg.broker_uris(config[cfg.AMQP_URI])),
        "options": {"rates": options.rates, "duration_s": options.duration_s,
                    "flat_out": options.flat_out, "concurrency": options.concurrency,
                    "instances": options.instances, "baseline_messages": options.baseline_messages,
                    "framework_floor": options.framework_floor},
    }
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="whistle-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with sandbox_cm as sandbox:
            say(f"run {run_id}: vhost {sandbox.vhost}, Redis prefix {sandbox.prefix}")
            size = issue_event_size()
            say(f"baseline: {options.baseline_messages} messages of {size} B through 4 hops")
            baseline = run_baseline(sandbox.amqp_uri, options.baseline_messages, size)
            report["baseline"] = baseline
            say(f"baseline: {baseline['throughput_msg_s']} msg/s")
            if options.framework_floor:
                say("framework floor: the same four hops through nameko, with empty handlers")
                floor = run_baseline(sandbox.amqp_uri, options.baseline_messages, size,
                                     hop_module=NAMEKO_HOP)
                floor["ratio_to_baseline"] = _ratio(floor["throughput_msg_s"],
                                                    baseline["throughput_msg_s"])
                report["framework_floor"] = floor
                say(f"framework floor: {floor['throughput_msg_s']} msg/s "
                    f"({floor['ratio_to_baseline']}x the baseline)")
            report.update(run_whistle(sandbox, options, run_id, log_dir, baseline, say))
    finally:
        if options.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)
    report["errors"] = sum(p["errors"]["total"] for p in report.get("phases", [])) \
        + report.get("dead_letters", 0)
    report["targets"] = targets(report)
    return report


def run_whistle(sandbox: Sandbox, options: Options, run_id: str, log_dir: Path,
                baseline: dict, say: Callable[[str], None]) -> dict:
    found: dict = {"phases": []}
    limit = baseline["throughput_msg_s"]
    say(f"starting services: {options.instances}")
    with Cluster(options.instances, sandbox.amqp_uri, sandbox.redis_url, sandbox.prefix,
                 log_dir, options.service_env) as cluster:
        say("services running: " + ", ".join(f"{p.name} (pid {p.pid})"
                                             for p in cluster.processes))
        observer = Observer(sandbox.amqp_uri, sandbox.redis_url, sandbox.prefix)
        try:
            observer.start()
            bench = Bench(sandbox, cluster, observer, options, run_id, say)
            if options.warmup:
                bench.phase("warm-up", options.warmup, 20.0, 4, limit)
            for rate in options.rates:
                count = max(1, round(rate * options.duration_s))
                found["phases"].append(bench.phase(f"{rate:g}/s", count, rate,
                                                   options.rate_concurrency, limit))
            if options.flat_out:
                flat = bench.phase(f"flat out x{options.concurrency}", options.flat_out, None,
                                   options.concurrency, limit, options.profile_dir)
                found["phases"].append(flat)
                if options.scale_busiest:
                    found["scaling"], again = scale_busiest(bench, flat, limit)
                    found["phases"].append(again)
            found["dead_letters"] = dead_letters(sandbox.amqp_uri)
        finally:
            with uninterrupted():
                observer.stop()
                found["peak_rss_mb"] = {k: _round(v) for k, v in cluster.peak_rss_mb().items()}
    return found


def scale_busiest(bench: Bench, flat: dict, limit: float | None) -> tuple[dict, dict]:
    """Flat out again with one more instance of the service that used the most CPU."""
    busiest = max(flat["cpu_by_service"], key=flat["cpu_by_service"].get)
    before = bench.cluster.counts[busiest]
    bench.say(f"scaling {busiest} from {before} to {before + 1} instances")
    bench.cluster.add({busiest: 1})
    again = bench.phase(f"flat out x{bench.options.concurrency}, {busiest} x{before + 1}",
                        bench.options.flat_out, None, bench.options.concurrency, limit)
    return {"service": busiest, "from": before, "to": before + 1, "phase": again["name"],
            "throughput_before": flat["throughput"], "throughput_after": again["throughput"],
            "change": round(again["throughput"] / flat["throughput"], 3)
            if again["throughput"] and flat["throughput"] else None}, again


def targets(report: dict) -> dict:
    """The issue's targets, each with the figure it is judged on."""
    phases = report.get("phases", [])
    flat = next((p for p in phases if p["mode"] == "flat_out"), None)
    at_rate = next((p for p in phases if p["offered_rate"] == TARGET_P99_RATE), None)
    ratio = flat["ratio_to_baseline"] if flat else None
    p99 = at_rate["latency_ms"]["told"]["p99"] if at_rate else None
    return {
        "throughput_ratio": {"target": TARGET_RATIO, "value": ratio,
                             "met": ratio is not None and ratio >= TARGET_RATIO},
        "p99_told_ms_at_100": {"target": TARGET_P99_MS, "value": p99,
                               "met": p99 is not None and p99 <= TARGET_P99_MS},
        "errors": {"target": 0, "value": report["errors"], "met": report["errors"] == 0},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _ratio(value: float | None, limit: float | None) -> float | None:
    return round(value / limit, 3) if value and limit else None
