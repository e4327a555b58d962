"""``@rpc`` and ``RpcProxy``: nameko's RPC, with queues that survive a cluster node.

nameko declares each service's RPC queue (``rpc-<service>``) as a durable classic
queue. On a RabbitMQ cluster such a queue lives on one node: when that node is down
the queue is unreachable, and a service reconnecting to another node cannot even
declare it (``NOT_FOUND``, "home node … is down") and stops consuming. With
``WHISTLE_QUEUE_TYPE=quorum`` the RPC queue is a quorum queue too, replicated like
the event queues (``shared.topology.type_arguments``, role ``"rpc"``). Classic
deployments declare exactly what nameko declares.

The same goes for the queue an in-service ``RpcProxy`` takes its replies from
(``rpc.reply-<service>-<uuid>``): nameko declares it durable, so when its node dies
the service cannot declare it again anywhere ("home node … is down") and stops
getting replies (seen in ``tests/cluster/test_cluster_clients.py``). With quorum
queues, it is declared transient instead: RabbitMQ forgets a transient queue with
its node, and the service declares it afresh on a surviving one. Replies in flight
when the node died are lost; their callers' calls fail or time out as they would.

Usage, as nameko's own::

    from shared.rpc import rpc

    class IntakeService:
        name = "intake"

        @rpc(expected_exceptions=EXPECTED_ERRORS)
        def get_issue(self, issue_id): ...
"""

from __future__ import annotations

from nameko.rpc import ReplyListener as NamekoReplyListener
from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import RpcConsumer as NamekoRpcConsumer
from nameko.rpc import RpcProxy as NamekoRpcProxy

from shared import config as cfg
from shared.consuming import FailoverQueueConsumer
from shared.topology import QUORUM, type_arguments


class RpcConsumer(NamekoRpcConsumer):
    """nameko's RPC consumer; its queue gets the arguments of the deployment's type, and
    its consumer is registered again when a reply's ack found the connection lost."""

    queue_consumer = FailoverQueueConsumer()

    def setup(self):
        super().setup()  # builds self.queue (once per container; a shared extension)
        arguments = type_arguments(cfg.get(self.container.config, cfg.QUEUE_TYPE), "rpc")
        if arguments:
            self.queue.queue_arguments = {**(self.queue.queue_arguments or {}), **arguments}


class Rpc(NamekoRpc):
    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator


class ReplyListener(NamekoReplyListener):
    """nameko's reply listener; its queue transient on quorum (cluster) deployments, and
    its consumer registered again like the RPC consumer's (they share one)."""

    queue_consumer = FailoverQueueConsumer()

    def setup(self):
        super().setup()  # builds self.queue
        if cfg.get(self.container.config, cfg.QUEUE_TYPE) == QUORUM:
            self.queue.durable = False


class RpcProxy(NamekoRpcProxy):
    rpc_reply_listener = ReplyListener()
