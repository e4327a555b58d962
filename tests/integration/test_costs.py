"""``python -m bench.costs``: its units do their work (valgrind itself is not run here)."""

import pytest

from bench import costs

pytestmark = pytest.mark.integration


def test_the_in_process_units_run_and_leave_nothing_behind(redis_client):
    # Keys of its own only: a measurement running beside the tests has costs-* keys too.
    key, prefix = "costs-in-process-test-key", "costs-in-process-test"

    costs._log_line(3)
    costs._redis_command(3, key)
    costs._issue_write_path(2, prefix)

    assert not redis_client.exists(key)
    assert not list(redis_client.scan_iter(f"{prefix}:*"))


def test_the_count_is_read_from_callgrinds_summary():
    summary = "==123== Events    : Ir\n==123== Collected : 1,234,567\n==123==\n"
    assert [int(x.replace(",", "")) for x in costs.COLLECTED.findall(summary)] == [1234567]


def test_every_unit_has_its_sizes():
    assert set(costs.SIZES) == set(costs.UNITS)


def test_route_one_routes_the_issues_it_prepared_and_leaves_nothing_behind(redis_client,
                                                                           tmp_path):
    import json

    from bench.infra import delete_prefix
    from shared.store import IssueStore

    prefix, bodies = "costs-route-one-test", tmp_path / "bodies.json"
    try:
        bodies.write_text(json.dumps(costs._received_issues(4, prefix), ensure_ascii=False))
        costs._route_received(prefix, str(bodies))
        store = IssueStore(redis_client, prefix)
        assert [store.get(f"WH-20261121-{i:04d}").status.value for i in range(1, 5)] == [
            "dispatched"] * 4
    finally:
        delete_prefix(costs.REDIS_URL, prefix)
    assert not list(redis_client.scan_iter(f"{prefix}:*"))  # its own: a measurement may run
