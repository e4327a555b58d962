"""The report as Markdown tables: readable in a terminal, pasted as is into docs/benchmarks.md."""

from __future__ import annotations

LATENCIES = (("accepted", "201 Created"), ("dispatched", "dispatched to every agency"),
             ("told", '"received" message recorded'))


def table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _instances(counts: dict[str, int]) -> str:
    if len(set(counts.values())) == 1:
        return f"{next(iter(counts.values()))} each"
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def render(report: dict) -> str:
    out = []
    m = report["machine"]
    out.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux "
               f"{m['kernel']}, Python {m['python']}, RabbitMQ {m['rabbitmq']}, "
               f"Redis {m['redis']}, " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    if "queue_type" in report:
        nodes = report.get("broker_nodes", 1)
        out.append(f"\nQueues: {report['queue_type']}, on {nodes} RabbitMQ node"
                   f"{'s' if nodes != 1 else ''} (the baseline's hops too)")
    base = report.get("baseline")
    if base:
        out.append(f"\nBroker baseline: {base['throughput_msg_s']} msg/s through {base['hops']} "
                   f"hops ({base['messages']} persistent {base['size_bytes']} B JSON messages, "
                   f"publisher confirms, one process a hop; {base['delivered']} delivered; "
                   "CPU ms per message: " + ", ".join(
                       f"{k} {v}" for k, v in base["cpu_ms_per_message"].items()) + ")")
    floor = report.get("framework_floor")
    if floor:
        out.append(f"\nFramework floor: {floor['throughput_msg_s']} msg/s, "
                   f"{floor['ratio_to_baseline']}x the baseline (the same {floor['hops']} hops "
                   "done by nameko services with empty handlers: @consume, then a Publisher "
                   f"with confirms; {floor['delivered']} delivered; CPU ms per message: "
                   + ", ".join(f"{k} {v}" for k, v in floor["cpu_ms_per_message"].items())
                   + ")")
    phases = report.get("phases", [])
    if phases:
        out.append("\n" + table(
            ["phase", "instances", "issues", "completed", "submitted/s", "throughput/s",
             "x baseline", "generator lag p99 ms", "errors"],
            [[p["name"], _instances(p["instances"]), p["submitted"], p["completed"],
              p["submit_rate"], p["throughput"], p["ratio_to_baseline"],
              (p["lag_ms"] or {}).get("p99"), p["errors"]["total"]] for p in phases]))
        out.append("\nLatency from the request being sent, ms:\n\n" + table(
            ["phase", "to", "p50", "p95", "p99", "max"],
            [[p["name"], label, *(p["latency_ms"][key][q] for q in ("p50", "p95", "p99", "max"))]
             for p in phases for key, label in LATENCIES]))
        out.append("\n" + cpu_table(phases, report.get("peak_rss_mb", {})))
        out.append("\nRedis commands per completed issue (the benchmark's own polling included):"
                   "\n\n" + table(["phase", "total", "most called"], [
                       [p["name"], round(sum(p["redis_calls_per_issue"].values()), 1),
                        ", ".join(f"{k} {v}" for k, v in list(p["redis_calls_per_issue"]
                                                               .items())[:8])]
                       for p in phases]))
        backlog = [[p["name"], ", ".join(f"{q.removeprefix('whistle.')} {n}"
                                         for q, n in p["queue_peaks"].items()) or "none"]
                   for p in phases if p["mode"] == "flat_out"]
        if backlog:
            out.append("\nMost messages waiting (sampled every 0.5 s):\n\n"
                       + table(["phase", "queue peaks"], backlog))
    scaling = report.get("scaling")
    if scaling:
        out.append(f"\nScaling the busiest service ({scaling['service']}, by CPU) from "
                   f"{scaling['from']} to {scaling['to']} instances: "
                   f"{scaling['throughput_before']} -> {scaling['throughput_after']} issues/s "
                   f"(x{scaling['change']})")
    for phase in phases:
        if phase.get("profile"):
            out.append("\n" + profile_table(phase))
    samples = [s for p in phases for s in p.get("error_samples", [])]
    if samples:
        out.append("\nFirst problems seen:\n" + "\n".join(f"- {s}" for s in samples[:10]))
    targets = report.get("targets")
    if targets:
        out.append("\nTargets: " + "; ".join(
            f"{name} {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}"
            for name, t in targets.items()))
    out.append(f"\nErrors: {report.get('errors', 0)} (dead letters "
               f"{report.get('dead_letters', 0)})")
    return "\n".join(out)


def cpu_table(phases: list[dict], rss: dict[str, float]) -> str:
    """CPU milliseconds per completed issue, per process and phase; peak RSS at the end."""
    processes = sorted({k for p in phases for k in p["cpu_ms_per_issue"]},
                       key=lambda k: (k in ("bench", "rabbitmq", "redis", "other"), k == "other", k))
    rows = [[name, *(p["cpu_ms_per_issue"].get(name) for p in phases), rss.get(name)]
            for name in processes]
    rows.append(["total but other", *(round(sum(v for k, v in p["cpu_ms_per_issue"].items()
                                                if k != "other"), 1) for p in phases), None])
    return ("CPU ms per completed issue (and peak RSS, MiB); \"other\" is every other process "
            "on the machine, which should be about 0:\n\n"
            + table(["process", *(p["name"] for p in phases), "peak RSS"], rows))


def profile_table(phase: dict) -> str:
    profile = phase["profile"]
    rows = []
    for name, summary in profile["processes"].items():
        packages = ", ".join(f"{k} {v}%" for k, v in list(summary.get("by_package", {})
                                                         .items())[:6])
        project = ", ".join(f"{k} {v}%" for k, v in list(summary.get("top_project", {})
                                                        .items())[:4])
        rows.append([name, summary.get("samples", 0), packages, project])
    return (f"Profile of {phase['name']} (py-spy, {profile['rate_hz']} Hz; {profile['dir']}):\n\n"
            + table(["process", "samples", "innermost frame by package", "project code (incl.)"],
                    rows))
