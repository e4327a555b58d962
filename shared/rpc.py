"""``@rpc``: nameko's RPC entrypoint, with its queue of the deployment's type.

nameko declares each service's RPC queue (``rpc-<service>``) as a durable classic
queue. On a RabbitMQ cluster such a queue lives on one node: when that node is down
the queue is unreachable, and a service reconnecting to another node cannot even
declare it (``NOT_FOUND``, "home node … is down") and stops consuming. With
``WHISTLE_QUEUE_TYPE=quorum`` the RPC queue is a quorum queue too, replicated like
the event queues (``shared.topology.type_arguments``, role ``"rpc"``). Classic
deployments declare exactly what nameko declares.

Usage, as nameko's own::

    from shared.rpc import rpc

    class IntakeService:
        name = "intake"

        @rpc(expected_exceptions=EXPECTED_ERRORS)
        def get_issue(self, issue_id): ...
"""

from __future__ import annotations

from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import RpcConsumer as NamekoRpcConsumer

from shared import config as cfg
from shared.topology import type_arguments


class RpcConsumer(NamekoRpcConsumer):
    """nameko's RPC consumer; its queue gets the arguments of the deployment's type."""

    def setup(self):
        super().setup()  # builds self.queue (once per container; a shared extension)
        arguments = type_arguments(cfg.get(self.container.config, cfg.QUEUE_TYPE), "rpc")
        if arguments:
            self.queue.queue_arguments = {**(self.queue.queue_arguments or {}), **arguments}


class Rpc(NamekoRpc):
    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator
