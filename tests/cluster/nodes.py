"""The three-node RabbitMQ cluster of ``scripts/cluster.sh``, as the cluster scenarios drive it.

Only the cluster's own nodes (``whistle-a``, ``-b``, ``-c``@localhost) are ever killed,
stopped, started or cut off. The machine's broker (``rabbit@localhost``: 5672, 15672,
25672) is never touched.

A partition (:meth:`ClusterNodes.partition`) is made with iptables rules that name only
this cluster's own Erlang distribution ports (25781-25783) and the cut-off node's own
source address: each node opens its distribution connections from an address of its own
(127.0.0.11-13, ``inet_dist_connect_options`` in ``scripts/cluster.sh``), so the rules
drop exactly the traffic between that node and the other two (and rabbitmqctl's to it),
and nothing of anyone else's. AMQP and the management API are not blocked: clients reach
the cut-off node as they would in a real partition, and RabbitMQ's own partition
handling (``pause_minority``) is what closes their connections. The rules carry the
comment ``whistle-cluster``; :meth:`heal` removes them, and so does
``scripts/cluster.sh down`` should a run be killed half-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
BASE = Path(os.environ.get("WHISTLE_CLUSTER_DIR", "/var/tmp/whistle-cluster"))
RULE_COMMENT = "whistle-cluster"
AUTH = ("guest", "guest")


@dataclass(frozen=True)
class Node:
    letter: str

    @property
    def index(self) -> int:
        return "abc".index(self.letter) + 1

    @property
    def name(self) -> str:
        return f"whistle-{self.letter}@localhost"

    @property
    def amqp_port(self) -> int:
        return 5780 + self.index

    @property
    def management_port(self) -> int:
        return 15780 + self.index

    @property
    def dist_port(self) -> int:
        return 25780 + self.index

    @property
    def source_ip(self) -> str:
        return f"127.0.0.{10 + self.index}"

    def amqp_uri(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.management_port}/api"

    def pid(self) -> int | None:
        """The OS pid of the node's Erlang VM, if it runs: from its pid file, checked
        against the process's environment (the node's own env file), so a stale pid
        file never points at someone else's process."""
        try:
            pid = int((BASE / self.letter / "pid").read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError):
            return None
        mine = f"RABBITMQ_CONF_ENV_FILE={BASE / self.letter / 'rabbitmq-env.conf'}".encode()
        return pid if mine in environ.split(b"\0") else None


NODES = tuple(Node(letter) for letter in "abc")


def cluster_sh(*args: str, timeout: float = 180.0) -> str:
    done = subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"cluster.sh {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


class ClusterNodes:
    """Up, down, kill, partition; and a vhost of a test's own on the cluster."""

    nodes = NODES

    def node(self, letter: str) -> Node:
        return Node(letter)

    def up(self) -> None:
        cluster_sh("up")

    def down(self) -> None:
        cluster_sh("down")

    # ------------------------------------------------------------- queries

    def _get(self, path: str, among: tuple[Node, ...] = NODES, timeout: float = 20.0) -> object:
        """GET from the first node whose management API answers. (While a node is cut
        off, the others' API may wait for it until they have noticed: up to ~15 s.)"""
        problems = []
        for node in among:
            try:
                response = requests.get(f"{node.api}{path}", auth=AUTH, timeout=timeout)
                response.raise_for_status()
                return response.json()
            except requests.RequestException as exc:
                problems.append(f"{node.name}: {type(exc).__name__}")
        raise AssertionError(f"no management API answers: {problems}")

    def running(self) -> set[str]:
        """The nodes the cluster reports running (asked of any node that answers)."""
        return {n["name"] for n in self._get("/nodes") if n.get("running")}

    def leaders(self, vhost: str) -> dict[str, str]:
        """Each quorum queue of the vhost and the node leading it."""
        found = self._get(f"/queues/{quote(vhost, safe='')}?columns=name,type,leader")
        return {q["name"]: q.get("leader") for q in found if q.get("type") == "quorum"}

    def wait_running(self, count: int = 3, timeout: float = 120.0) -> float:
        started = time.monotonic()
        while True:
            with contextlib.suppress(AssertionError):
                if len(self.running()) == count:
                    return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"not {count} nodes running"
            time.sleep(0.5)

    # --------------------------------------------------------------- vhosts

    def create_vhost(self) -> str:
        vhost = f"whistle-cluster-{uuid.uuid4().hex[:8]}"
        for path, body in ((f"/vhosts/{quote(vhost, safe='')}", {}),
                           (f"/permissions/{quote(vhost, safe='')}/guest",
                            {"configure": ".*", "write": ".*", "read": ".*"})):
            response = requests.put(f"{NODES[0].api}{path}", json=body, auth=AUTH, timeout=30)
            response.raise_for_status()
        return vhost

    def delete_vhost(self, vhost: str) -> None:
        for node in NODES:
            with contextlib.suppress(requests.RequestException):
                response = requests.delete(f"{node.api}/vhosts/{quote(vhost, safe='')}",
                                           auth=AUTH, timeout=60)
                if response.status_code in (204, 404):
                    return

    def amqp_uri(self, vhost: str) -> str:
        """Every node, kombu's failover syntax: what ``AMQP_URI`` says for a cluster."""
        return ";".join(node.amqp_uri(vhost) for node in NODES)

    # --------------------------------------------------------------- faults

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its clients or its peers."""
        pid = node.pid()
        assert pid, f"{node.name} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, node: Node) -> None:
        cluster_sh("start-node", node.letter)

    def stop(self, node: Node) -> None:
        cluster_sh("stop-node", node.letter)

    def await_quorum_plus_one(self, node: Node, timeout: float = 120.0) -> None:
        """RabbitMQ's own check before a node may go down in a rolling restart: every
        quorum queue it hosts has enough members online elsewhere."""
        done = subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq",
             f"RABBITMQ_CONF_ENV_FILE={BASE / node.letter / 'rabbitmq-env.conf'}",
             "/usr/lib/rabbitmq/bin/rabbitmq-upgrade", "-n", node.name,
             "await_online_quorum_plus_one", "-t", str(int(timeout))],
            capture_output=True, text=True, timeout=timeout + 30)
        assert done.returncode == 0, done.stdout + done.stderr

    def _rules(self, node: Node) -> list[list[str]]:
        others = ",".join(str(n.dist_port) for n in NODES if n != node)
        tag = ["-m", "comment", "--comment", RULE_COMMENT, "-j", "DROP"]
        return [
            ["-p", "tcp", "--dport", str(node.dist_port), *tag],  # to the node's dist port
            ["-p", "tcp", "--sport", str(node.dist_port), *tag],  # and its answers
            # the connections the node opened itself, from its own address
            ["-s", node.source_ip, "-p", "tcp", "-m", "multiport", "--dports", others, *tag],
            ["-d", node.source_ip, "-p", "tcp", "-m", "multiport", "--sports", others, *tag],
        ]

    def partition(self, node: Node) -> None:
        """Cut ``node`` off from the other two (Erlang distribution only)."""
        for rule in self._rules(node):
            subprocess.run(["iptables", "-I", "INPUT", *rule], check=True, timeout=10)

    def heal(self, node: Node) -> None:
        for rule in self._rules(node):
            subprocess.run(["iptables", "-D", "INPUT", *rule], timeout=10,
                           capture_output=True)


def partitioned_from(cluster: ClusterNodes, node: Node) -> bool:
    """Whether the other two nodes see ``node`` as down."""
    others = tuple(n for n in NODES if n != node)
    try:
        running = {n["name"] for n in cluster._get("/nodes", others) if n.get("running")}
    except AssertionError:  # their API waits for the lost node: not noticed yet
        return False
    return node.name not in running
