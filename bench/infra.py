"""A throwaway RabbitMQ vhost and Redis key prefix for one benchmark run.

The vhost is created through the management API (``WHISTLE_RABBIT_API``, default
``http://guest:guest@127.0.0.1:15672``) with full permissions for the API's user,
and deleted afterwards with everything in it. The Redis prefix is unique to the
run; its keys are deleted afterwards with SCAN (never KEYS), in batches.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from bench.signals import uninterrupted
from shared.config import broker_uris
from shared.store import connect
from whistle.ops import ManagementApi

HTTP_TIMEOUT_S = 10.0


@dataclass
class Sandbox:
    """Where one run lives: its vhost (``amqp_uri``) and its Redis prefix."""

    amqp_uri: str
    redis_url: str
    prefix: str
    vhost: str
    api: ManagementApi


class BenchSandbox:
    """Context manager: create the vhost, yield a :class:`Sandbox`, then clean up both."""

    def __init__(self, amqp_uri: str, redis_url: str, api_url: str, run_id: str | None = None):
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.vhost = f"whistle-bench-{self.run_id}"
        self.prefix = f"bench-{self.run_id}"
        self.redis_url = redis_url
        # A cluster's AMQP_URI lists its nodes: each gets the run's vhost. The vhost is
        # created through the first management API (WHISTLE_RABBIT_API may list several).
        self.amqp_uri = ";".join(
            urlunsplit(urlsplit(uri)._replace(path="/" + quote(self.vhost, safe="")))
            for uri in broker_uris(amqp_uri))
        api = urlsplit(api_url.split(";")[0].strip())
        self.api_base = f"{api.scheme}://{api.netloc.rpartition('@')[2]}{api.path.rstrip('/')}/api"
        self.api_user = unquote(api.username or "guest")
        self.auth = (self.api_user, unquote(api.password or "guest"))
        self.api = ManagementApi(api_url, self.vhost)

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.api_base}{path}", auth=self.auth,
                                    timeout=HTTP_TIMEOUT_S, **kwargs)
        if method != "DELETE" or response.status_code != 404:
            response.raise_for_status()
        return response

    def rabbitmq_version(self) -> str | None:
        try:
            return self._call("GET", "/overview").json().get("rabbitmq_version")
        except (requests.RequestException, ValueError):
            return None

    def __enter__(self) -> Sandbox:
        vhost = quote(self.vhost, safe="")
        try:
            self._call("PUT", f"/vhosts/{vhost}", json={})
            self._call("PUT", f"/permissions/{vhost}/{quote(self.api_user, safe='')}",
                       json={"configure": ".*", "write": ".*", "read": ".*"})
        except BaseException:  # a signal or an error half-way: no vhost left behind
            self.__exit__()
            raise
        return Sandbox(self.amqp_uri, self.redis_url, self.prefix, self.vhost, self.api)

    def __exit__(self, *exc_info) -> None:
        with uninterrupted():
            try:
                self._call("DELETE", f"/vhosts/{quote(self.vhost, safe='')}")
            finally:
                delete_prefix(self.redis_url, self.prefix)


def delete_prefix(redis_url: str, prefix: str, batch: int = 500) -> int:
    """Delete every key under ``prefix:``, found with SCAN; how many were deleted."""
    client = connect(redis_url)
    deleted, keys = 0, []
    try:
        for key in client.scan_iter(f"{prefix}:*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                deleted += client.delete(*keys)
                keys = []
        if keys:
            deleted += client.delete(*keys)
    finally:
        client.close()
    return deleted
