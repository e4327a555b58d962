"""Steps of the chain that tests take through the running services, over RPC and HTTP."""

from __future__ import annotations

import requests
from nameko.standalone.rpc import ClusterRpcProxy

from shared import config as cfg
from shared.auth import issue_feedback_token, issue_token
from tests.support.waiting import wait_for, wait_until


def resolve_and_rate_satisfied(whistle: str, config: dict, store, issue_id: str) -> None:
    """Every agency on ``issue_id`` reports in and resolves its part (its own staff's
    token), then its resident rates it satisfied through their link: closed."""
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as rpc:
        for part in store.get(issue_id).assignments:
            token = issue_token(part.agency, f"{part.agency}-1", config[cfg.SECRET])
            rpc.agency.acknowledge(token, part.agency, issue_id)
            rpc.agency.resolve(token, part.agency, issue_id, {"note": "已修好"})
    wait_until(lambda: store.get(issue_id).status.value == "resolved")
    rated = requests.post(f"{whistle}/issues/{issue_id}/feedback", timeout=5, params={
        "token": issue_feedback_token(issue_id, issue_id, 0, config[cfg.SECRET], 3600)},
        json={"rating": "satisfied"})
    assert rated.status_code == 200, rated.text
    wait_until(lambda: store.get(issue_id).status.value == "closed")


def resolve_over_http(base: str, agency: str, headers: dict, issue_id: str, desk: dict,
                      note: str) -> None:
    """``agency`` reports in and resolves its part of ``issue_id`` (``note``) through the
    API with its staff's ``headers``; returns once the desk sees the issue waiting for
    its rating (``feedback_due``)."""
    for step, body in (("acknowledge", None), ("resolve", {"note": note})):
        done = requests.post(f"{base}/agencies/{agency}/assignments/{issue_id}/{step}",
                             headers=headers, json=body, timeout=10)
        assert done.status_code == 200, done.text
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk, timeout=10).json()
             ["feedback_due"], bool)
