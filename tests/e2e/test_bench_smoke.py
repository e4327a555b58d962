"""The benchmark in miniature, so it never rots: ``python -m bench`` end to end, tiny.

A few dozen issues at a short fixed rate, one instance of each service, a small
baseline and framework floor, and a short flat-out phase with the busiest service
scaled to two. It asserts the report's structure and that nothing failed, never
any timing: figures on a shared CI machine say nothing.
"""

import json
import subprocess
import sys

import pytest
import redis
import requests

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.e2e

PHASE_KEYS = {"name", "mode", "offered_rate", "concurrency", "instances", "submitted", "accepted",
              "completed", "submit_rate", "throughput", "ratio_to_baseline", "latency_ms",
              "lag_ms", "errors", "cpu_ms_per_issue", "redis_calls_per_issue", "queue_peaks",
              "cpu_by_service"}
LATENCY_KEYS = {"accepted", "dispatched", "told", "complete"}
PERCENTILES = {"n", "p50", "p95", "p99", "max"}
API = "http://guest:guest@127.0.0.1:15672/api"


def vhosts() -> set[str]:
    return {v["name"] for v in requests.get(f"{API}/vhosts", timeout=5).json()}


def test_a_tiny_benchmark_reports_every_figure_and_no_error(tmp_path):
    report_path = tmp_path / "report.json"

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--rates", "20", "--duration", "1.5",
         "--flat-out", "24", "--concurrency", "4", "--baseline-messages", "200",
         "--warmup", "4", "--json", str(report_path)],
        capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(report_path.read_text())
    assert report["errors"] == 0
    assert report["baseline"]["delivered"] == 200
    assert report["baseline"]["throughput_msg_s"] > 0
    floor = report["framework_floor"]  # the same hops through nameko
    assert floor["delivered"] == 200 and floor["ratio_to_baseline"] > 0
    assert [p["name"] for p in report["phases"]][:2] == ["20/s", "flat out x4"]
    assert len(report["phases"]) == 3  # the last one: the busiest service scaled to two
    for phase in report["phases"]:
        assert phase.keys() >= PHASE_KEYS
        assert phase["errors"]["total"] == 0
        assert phase["completed"] == phase["accepted"] == phase["submitted"]
        assert phase["latency_ms"].keys() == LATENCY_KEYS
        for figures in phase["latency_ms"].values():
            assert figures.keys() == PERCENTILES and figures["n"] == phase["completed"]
        assert {"intake-1", "routing-1", "agency-1", "notify-1", "rabbitmq", "redis",
                "bench"} <= phase["cpu_ms_per_issue"].keys()
    scaling = report["scaling"]
    assert scaling["to"] == scaling["from"] + 1 == 2
    assert report["phases"][2]["instances"][scaling["service"]] == 2
    assert set(report["peak_rss_mb"]) >= {"intake-1", "routing-1", "agency-1", "notify-1",
                                          f"{scaling['service']}-2"}
    assert all(rss and rss > 0 for rss in report["peak_rss_mb"].values())
    assert set(report["targets"]) == {"throughput_ratio", "p99_told_ms_at_100", "errors"}
    assert "| phase |" in done.stdout  # the tables were printed

    # Nothing is left behind: the vhost is gone, and so is every key under the prefix.
    assert f"whistle-bench-{report['run_id']}" not in vhosts()
    client = redis.Redis.from_url(REDIS_URL)
    assert not list(client.scan_iter(f"bench-{report['run_id']}:*", count=1000))
    client.close()


def tiny_quorum_bench(tmp_path, env=None) -> dict:
    """A tiny ``python -m bench --queue-type quorum``: its report, checked for errors."""
    report_path = tmp_path / "quorum.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--queue-type", "quorum", "--rates", "20",
         "--duration", "1", "--flat-out", "20", "--concurrency", "4", "--baseline-messages",
         "100", "--warmup", "4", "--no-scale-busiest", "--no-framework-floor",
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=180, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(report_path.read_text())
    assert report["queue_type"] == "quorum" and report["errors"] == 0
    assert report["baseline"]["delivered"] == 100
    assert [p["completed"] for p in report["phases"]] == [20, 20]
    assert "Queues: quorum" in done.stdout
    return report


def test_a_tiny_benchmark_on_quorum_queues(tmp_path):
    assert tiny_quorum_bench(tmp_path)["broker_nodes"] == 1
