"""The operator's tools on the cluster when the node they use dies: ``whistle tail``
follows again on a surviving node by itself and says what it may have missed, and
``whistle status`` answers from another node's management API."""

import json
import os
import signal
import subprocess
import time
from urllib.parse import quote

import pytest
import requests

from tests.e2e.conftest import WHISTLE
from tests.faults.harness import issue_payload

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def submit(url: str, i: int) -> str:
    response = requests.post(f"{url}/issues", json=issue_payload(i), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["issue_id"]


def wait_for(path, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (found := path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} never came: {found[-2000:]}"
        time.sleep(0.2)
    return found


def test_tail_and_status_carry_on_when_their_node_is_killed(
        cluster, whistle_processes, whistle_env, tmp_path):
    whistle = whistle_processes()
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = subprocess.Popen([WHISTLE, "tail", "--json", "--type", "issue.*"],
                                env=whistle_env, stdout=stdout, stderr=stderr)
    try:
        wait_for(err, "following whistle.events")
        before = submit(whistle.url, 1)
        wait_for(out, before)

        first = cluster.node("a")  # every client connects to the first node it lists
        cluster.kill(first)
        wait_for(err, "following again on 127.0.0.1:578")
        after = submit(whistle.url, 2)  # the services moved to a surviving node too
        deadline = time.monotonic() + 60
        while len(seen := [json.loads(line)["type"] for line in out.read_text().splitlines()
                           if f'"{after}"' in line]) < 2:
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        assert seen == ["issue.received", "issue.dispatched"]

        status = subprocess.run([WHISTLE, "status", "--json"], env=whistle_env,
                                capture_output=True, text=True, timeout=60)
        report = json.loads(status.stdout)
        assert report["rabbitmq"]["ok"], report["rabbitmq"]
        assert report["rabbitmq"]["api"] != f"127.0.0.1:{first.management_port}"
        assert status.returncode == 0
    finally:
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(15) == 0, err.read_text()


def test_a_tiny_benchmark_on_the_cluster(cluster, tmp_path):
    """``python -m bench --queue-type quorum`` with AMQP_URI listing the three nodes."""
    from tests.e2e.test_bench_smoke import tiny_quorum_bench

    env = {**os.environ, "AMQP_URI": cluster.amqp_uri("/"),
           "WHISTLE_RABBIT_API": f"http://guest:guest@127.0.0.1:{cluster.node('a').management_port}"}
    assert tiny_quorum_bench(tmp_path, env)["broker_nodes"] == 3


def test_the_pages_service_keeps_its_rpc_replies_when_its_node_is_killed(
        cluster, cluster_vhost, whistle_processes):
    """web calls the other services through nameko's in-service RPC proxies, which
    consume replies from a queue of their own. When the node holding it dies, web must
    declare it again on a surviving node and carry on, not stop consuming."""
    web = whistle_processes("intake,routing,agency,notify,web")
    replies = lambda: [q for q in cluster._get(f"/queues/{quote(cluster_vhost, safe='')}")  # noqa: E731
                       if q["name"].startswith("rpc.reply-web")]
    assert replies()
    cluster.kill(cluster.node("a"))
    deadline = time.monotonic() + 60
    while not (found := replies()) or any(q.get("node") == "whistle-a@localhost" for q in found):
        assert web.proc.poll() is None, web.log()[-3000:]
        assert time.monotonic() < deadline, (found, web.log()[-3000:])
        time.sleep(1)
    assert requests.get(f"{web.url}/health", timeout=10).status_code == 200
    time.sleep(5)  # still consuming, not a container that died a moment later
    assert web.proc.poll() is None and '"level":"error"' not in web.log(), web.log()[-3000:]
