"""The pages' RPC calls end: a reply that never comes (lost with the broker node that
held the reply queue, or a service that does not answer) is a typed 503, not a page
that waits for ever (nameko's in-service proxy has no timeout of its own)."""

import eventlet
import pytest

from services.web import service as web
from shared.errors import Unavailable
from shared.web import error_response


def test_a_reply_that_never_comes_is_unavailable_not_a_hang(monkeypatch):
    monkeypatch.setattr(web, "RPC_TIMEOUT_S", 0.05)
    answered = []

    def reply_lost_with_its_node():  # what waiting on a lost reply looks like: for ever
        eventlet.sleep(3600)
        answered.append(True)

    with pytest.raises(Unavailable) as raised:
        web.WebService._rpc(None, reply_lost_with_its_node)
    assert not answered
    response = error_response(raised.value)
    assert response.status_code == 503
    assert "did not answer in time" in response.get_data(as_text=True)


def test_an_answer_within_the_time_is_returned():
    assert web.WebService._rpc(None, lambda issue_id: {"issue_id": issue_id}, "WH-1") == \
        {"issue_id": "WH-1"}
