"""servicerequestupdates as FixMyStreet polls it: the updates since its last poll, never
paged. A cut at one page was a silent loss: FixMyStreet's next poll starts where this one
ended, so whatever the page left out it never saw."""

import pytest
import requests

from services.intake.open311 import api, mapping
from services.intake.open311.clients import Open311Clients
from shared import config as cfg
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

V2 = "/open311/v2"


@pytest.fixture
def config(whistle_config, fresh_database_url):
    return {**whistle_config, cfg.DATABASE_URL: fresh_database_url}


def test_an_unpaged_poll_gets_every_update_of_its_window_or_a_clear_400(
        whistle, config, store, monkeypatch):
    monkeypatch.setattr(mapping, "MAX_REQUESTS", 2)  # one page: 2 (1,000 in production)
    key = Open311Clients(store.redis, config[cfg.KEY_PREFIX]).add("fixmystreet")
    for n in range(3):
        made = requests.post(f"{whistle}{V2}/requests.json", timeout=10, data={
            "api_key": key, "service_code": "flying_wire", "address_string": f"丽德花园{n}号楼",
            "attribute[community]": "缤泰社区", "description": "门口电线耷拉下来"})
        assert made.status_code == 201, made.text

    def poll(**params):
        return requests.get(f"{whistle}{V2}/servicerequestupdates.json", timeout=10,
                            params={"api_key": key, **params})

    every = wait_until(lambda: len(poll().json()) >= 6 and poll().json(), timeout=20)
    assert len({u["service_request_id"] for u in every}) == 3  # not one page of two
    paged = poll(page=2, page_size=2).json()
    assert paged == every[2:4]  # a client that pages still gets pages
    monkeypatch.setattr(api, "MAX_UNPAGED_UPDATES", 3)
    refused = poll()
    assert refused.status_code == 400
    assert "shorter window" in refused.json()[0]["description"]
