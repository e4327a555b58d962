"""Reloading routing's rules while it runs: bad files change nothing, messages keep flowing."""

from __future__ import annotations

import logging
import os
import signal

import eventlet
import pytest
from nameko.exceptions import IncorrectSignature
from nameko.standalone.rpc import ClusterRpcProxy

from services.routing.rules import SHIPPED_RULES, RulesError
from services.routing.rules_provider import (
    ReloadableRules,
    live_providers,
    reload_all,
    rules_provider_for,
)
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import InvalidPayload
from tests.integration import test_delivery as delivery
from tests.integration.test_delivery import dead_letters, publish, stored_issue, wait_until
from whistle.runner import reload_rules_on_sighup

pytestmark = pytest.mark.integration

store, amqp = delivery.store, delivery.amqp  # fixtures: an IssueStore, a broker connection

NEW_KEYWORD_TEXT = "there is a whiff of gas in the hall"  # the shipped rules: street office


def shipped_copy(path, *, new_keyword: bool = False, bad: bool = False):
    """Write the shipped rules to ``path``: with "whiff of gas" added to gas_leak, or
    with gas_leak led by an unknown agency."""
    text = SHIPPED_RULES.read_text(encoding="utf-8")
    if new_keyword:
        text = text.replace("smell gas,", "whiff of gas, smell gas,", 1)
    if bad:
        text = text.replace("lead: gas\n", "lead: gaz\n", 1)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def rules_file(tmp_path):
    return shipped_copy(tmp_path / "rules.yaml")


@pytest.fixture
def config(whistle_config, rules_file):
    # The keyword rules classify: what a reload changes is what these tests look at.
    return {**whistle_config, cfg.RULES_FILE: str(rules_file), cfg.ROUTING_MODEL: "keywords"}


@pytest.fixture
def routing(container_factory, config):
    container = container_factory(RoutingService, config)
    container.start()
    return container


@pytest.fixture
def rpc(config):
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as proxy:
        yield proxy


def provider_of(container) -> ReloadableRules:
    return next(ext for ext in container.extensions if isinstance(ext, ReloadableRules))


def explain(rpc, text: str) -> tuple[str, list[str]]:
    desk = issue_token("desk", "desk-wang", cfg.DEFAULTS[cfg.SECRET])
    answer = rpc.routing.explain_route(desk, {"text": text})
    return answer["category"], answer["keywords"]


def test_the_running_provider_is_registered_until_the_container_stops(routing, rules_file):
    provider = provider_of(routing)
    assert rules_provider_for("routing") is provider and provider in live_providers()
    assert provider.loaded.source == str(rules_file)
    routing.stop()
    assert provider not in live_providers()
    with pytest.raises(LookupError):
        rules_provider_for("routing")


def test_a_bad_file_at_start_stops_the_service(container_factory, config, rules_file):
    shipped_copy(rules_file, bad=True)
    with pytest.raises(RulesError, match="unknown agency 'gaz'"):
        container_factory(RoutingService, config).start()
    assert live_providers() == []


def test_a_bad_file_is_refused_and_the_old_rules_stay(routing, rules_file, tmp_path, rpc):
    provider = provider_of(routing)
    before = provider.loaded
    shipped_copy(rules_file, new_keyword=True, bad=True)  # bad, though it has the keyword
    with pytest.raises(RulesError, match="unknown agency 'gaz'") as refused:
        provider.reload()
    assert f"{rules_file}:" in str(refused.value)
    with pytest.raises(FileNotFoundError):
        provider.reload(str(tmp_path / "missing.yaml"))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00rules")
    with pytest.raises(RulesError, match="not UTF-8 text"):
        provider.reload(str(tmp_path / "binary.yaml"))

    assert provider.loaded is before
    assert explain(rpc, "有煤气味") == ("gas_leak", ["煤气味"])
    assert explain(rpc, NEW_KEYWORD_TEXT)[0] == "general"
    assert reload_all() == [("routing", str(refused.value))]
    assert provider.loaded is before


def test_an_added_keyword_is_used_after_reload(routing, rules_file, rpc):
    assert explain(rpc, NEW_KEYWORD_TEXT) == ("general", [])
    shipped_copy(rules_file, new_keyword=True)
    assert explain(rpc, NEW_KEYWORD_TEXT) == ("general", [])  # not until reloaded
    rules = provider_of(routing).reload()
    assert "whiff of gas" in rules.rule("gas_leak").keywords
    assert explain(rpc, NEW_KEYWORD_TEXT) == ("gas_leak", ["whiff of gas"])


def test_reload_from_another_path_becomes_the_file_reloaded_next(routing, tmp_path, rpc):
    provider = provider_of(routing)
    other = shipped_copy(tmp_path / "other.yaml", new_keyword=True)
    provider.reload(str(other))
    assert provider.loaded.source == str(other)
    assert reload_all() == [("routing", "ok")]
    assert provider.loaded.source == str(other)
    assert explain(rpc, NEW_KEYWORD_TEXT)[0] == "gas_leak"


def test_sighup_reloads_and_a_bad_file_is_logged_not_applied(routing, rules_file, rpc, caplog):
    previous = signal.signal(signal.SIGHUP, reload_rules_on_sighup)
    try:
        with caplog.at_level(logging.INFO):
            shipped_copy(rules_file, new_keyword=True)
            os.kill(os.getpid(), signal.SIGHUP)
            wait_until(lambda: explain(rpc, NEW_KEYWORD_TEXT)[0] == "gas_leak")
            assert wait_until(lambda: "SIGHUP: routing rules reloaded" in caplog.text)

            shipped_copy(rules_file, bad=True)
            os.kill(os.getpid(), signal.SIGHUP)
            assert wait_until(lambda: "SIGHUP: routing rules NOT reloaded" in caplog.text)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert "unknown agency 'gaz'" in caplog.text
    assert explain(rpc, NEW_KEYWORD_TEXT)[0] == "gas_leak"


def test_no_message_is_lost_while_rules_are_reloaded(routing, rules_file, tmp_path, store, amqp):
    provider = provider_of(routing)
    shipped, bad = str(rules_file), str(shipped_copy(tmp_path / "bad.yaml", bad=True))
    edited = shipped_copy(tmp_path / "edited.yaml", new_keyword=True)
    outcomes = {"ok": 0, "refused": 0}

    def keep_reloading():
        for i in range(10_000):
            try:
                provider.reload((shipped, bad, str(edited))[i % 3])
                outcomes["ok"] += 1
            except RulesError:
                outcomes["refused"] += 1
            eventlet.sleep(0.005)

    def publish_issues(first: int, count: int) -> list[str]:
        events = [stored_issue(store, f"WH-20261121-{n:04d}", NEW_KEYWORD_TEXT)
                  for n in range(first, first + count)]
        for event in events:
            publish(amqp, event.model_dump(mode="json"))
            eventlet.sleep(0.002)
        return [event.issue_id for event in events]

    def routed(issue_ids: list[str]) -> list:
        # Same-address gas reports merge into the first one (共性问题统筹): routed too.
        # Under the shipped rules nothing matches: the desk triages it (needs_triage).
        records = [store.get(issue_id) for issue_id in issue_ids]
        done = all(r.status.value in ("dispatched", "merged", "needs_triage") for r in records)
        return done and records

    reloader = eventlet.spawn(keep_reloading)
    during_ids = publish_issues(300, 40)
    during = wait_until(lambda: routed(during_ids), timeout=30)
    reloader.kill()
    assert outcomes["ok"] >= 10 and outcomes["refused"] >= 5

    provider.reload(str(edited))
    after_ids = publish_issues(400, 5)
    after = wait_until(lambda: routed(after_ids))

    for record in during + after:
        steps = [s.step for s in record.timeline]
        assert (steps.count("dispatched") + steps.count("merged")
                + steps.count("needs_triage")) == 1, record.issue_id
    assert {r.category for r in during} <= {None, "gas_leak"}
    assert {r.category for r in after} == {"gas_leak"}
    assert dead_letters(amqp) == []


def test_reload_rules_rpc(routing, rules_file, rpc):
    shipped_copy(rules_file, bad=True)
    with pytest.raises(InvalidPayload) as refused:
        rpc.routing.reload_rules()
    assert "old rules stay in force" in str(refused.value)
    assert f"{rules_file}:" in str(refused.value) and "unknown agency 'gaz'" in str(refused.value)
    assert explain(rpc, "有煤气味")[0] == "gas_leak"
    # Which file routing reads is the deployment's decision: a caller cannot name one.
    with pytest.raises(IncorrectSignature):
        rpc.routing.reload_rules("/nonexistent/rules.yaml")
    rules_file.unlink()
    with pytest.raises(InvalidPayload, match=f"cannot read {rules_file}"):
        rpc.routing.reload_rules()

    shipped_copy(rules_file, new_keyword=True)
    described = rpc.routing.reload_rules()
    assert described["source"] == str(rules_file) and described["rules"] >= 14
    assert explain(rpc, NEW_KEYWORD_TEXT)[0] == "gas_leak"
