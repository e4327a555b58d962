"""The operator's tools and the pages on the cluster when the node they use dies:
``whistle tail`` follows again on a surviving node by itself and says what it may have
missed, ``whistle status`` answers from another node's management API, and the pages
service gets its RPC replies on a surviving node. One kill serves all three."""

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


def test_tail_status_and_the_pages_carry_on_when_their_node_is_killed(
        cluster, cluster_vhost, whistle_processes, whistle_env, tmp_path):
    """One kill of the node every client is connected to (the first address), for three
    clients: ``whistle tail`` follows again on a surviving node, ``whistle status``
    answers from another node's API, and the pages service (web), which calls the
    others through nameko's in-service RPC proxies and takes their replies from a
    queue of its own, declares that queue again on a surviving node and carries on."""
    whistle = whistle_processes("intake,routing,agency,notify,web")
    replies = lambda: [q for q in cluster._get(f"/queues/{quote(cluster_vhost, safe='')}")  # noqa: E731
                       if q["name"].startswith("rpc.reply-web")]
    assert replies()
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

        while not (found := replies()) or any(q.get("node") == first.name for q in found):
            assert whistle.proc.poll() is None, whistle.log()[-3000:]
            assert time.monotonic() < deadline, (found, whistle.log()[-3000:])
            time.sleep(1)
        assert requests.get(f"{whistle.url}/health", timeout=10).status_code == 200
        assert whistle.proc.poll() is None and '"level":"error"' not in whistle.log(), \
            whistle.log()[-3000:]
    finally:
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(15) == 0, err.read_text()


def test_a_tiny_benchmark_on_the_cluster(cluster, tmp_path):
    """``python -m bench --queue-type quorum`` with AMQP_URI listing the three nodes."""
    from tests.e2e.test_bench_smoke import tiny_quorum_bench

    env = {**os.environ, "AMQP_URI": cluster.amqp_uri("/"),
           "WHISTLE_RABBIT_API": f"http://guest:guest@127.0.0.1:{cluster.node('a').management_port}"}
    assert tiny_quorum_bench(tmp_path, env)["broker_nodes"] == 3
