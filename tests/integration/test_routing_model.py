"""The learned router in a running routing service: trained by the command, loaded
through the classifier seam, retrained with the desk's corrections and reloaded while
issues flow, none lost."""

from __future__ import annotations

import json

import eventlet
import pytest
from click.testing import CliRunner
from nameko.standalone.rpc import ClusterRpcProxy

from services.routing.learned import publish as make_current
from services.routing.learned import resolve
from services.routing.service import RoutingService
from shared import config as cfg
from shared.auth import issue_token
from shared.errors import InvalidPayload
from tests.integration import test_delivery as delivery
from tests.integration.test_delivery import publish, stored_issue, wait_until
from whistle.cli import cli

pytestmark = pytest.mark.integration

store, amqp = delivery.store, delivery.amqp  # fixtures: an IssueStore, a broker connection

SEEDS = {
    "gas_leak": (True, ["厨房里有很重的煤气味", "闻到燃气味了，灶台那边", "楼道里煤气味很大",
                        "a strong smell of gas in the kitchen", "gas smell on the stairs"]),
    "noise": (False, ["广场舞音响太吵了", "工地晚上还在施工，吵得睡不着", "楼下饭店的风机噪音很大",
                      "loud music from the shop every night", "construction noise at 6am"]),
    "heating": (False, ["暖气不热，屋里才十几度", "暖气片冰凉", "家里暖气一点都不热",
                        "the radiators are cold again", "heating is not working, flat is freezing"]),
}
TAUGHT = "小区门口的快递柜坏了，取不出件"  # nothing like any seed: the desk teaches it


def corpus(path, copies: int = 3):
    lines = []
    for category, (urgent, texts) in SEEDS.items():
        for n in range(copies):
            for i, text in enumerate(texts):
                lines.append({"id": f"r9{len(lines):03d}", "text": f"{text}，第{n}{i}回",
                              "lang": "zh", "category": category, "urgent": urgent,
                              "support": [], "channel": "desk"})
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    return path


def train(*args: str) -> str:
    result = CliRunner().invoke(cli, ["routing", "train", "--no-embeddings", "--without-dev",
                                      *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    train("--train", str(corpus(tmp_path / "train.jsonl")), "--models-dir", str(folder))
    return folder


@pytest.fixture
def config(whistle_config, models):
    return {**whistle_config, cfg.ROUTING_MODEL: str(models / "current")}


@pytest.fixture
def rpc(config):
    with ClusterRpcProxy({"AMQP_URI": config[cfg.AMQP_URI]}, timeout=10) as proxy:
        yield proxy


def explain(rpc, text: str) -> dict:
    desk = issue_token("desk", "desk-wang", cfg.DEFAULTS[cfg.SECRET])
    return rpc.routing.explain_route(desk, {"text": text})


def test_routing_classifies_with_the_trained_model_and_explains_it(
        container_factory, config, models, rpc):
    container_factory(RoutingService, config).start()
    explained = explain(rpc, "家里一股煤气味")
    version = resolve(models / "current").name.removeprefix("router-")
    assert explained["category"] == "gas_leak" and explained["category_source"] == "model"
    assert explained["classifier"]["model_version"] == version
    assert explained["classifier"]["top"][0]["category"] == "gas_leak"
    assert any("煤气" in e["term"] or "气味" in e["term"]
               for e in explained["classifier"]["evidence"])
    assert explained["urgency"]["urgent"] is True
    assert any("gas" in reason for reason in explained["urgency"]["reasons"])

    # English: the report's words, each once, not the 3- to 5-character pieces of them
    shown = [e["term"] for e in explain(rpc, "The radiators are stone cold")["classifier"]
             ["evidence"]]
    assert shown[0] == "radiators" and len(shown) == len(set(shown)), shown
    assert not any("…" in term for term in shown), shown


def test_a_retrain_with_corrections_is_reloaded_while_issues_flow_and_none_is_lost(
        container_factory, config, models, tmp_path, rpc, store, amqp):
    container_factory(RoutingService, config).start()
    first = resolve(models / "current")

    # The desk's corrections, exported in the corpus format, folded into a retrain.
    corrections = tmp_path / "corrections"
    corrections.mkdir()
    taught = [{"id": f"c{n}", "text": f"{TAUGHT}（{n}号楼）", "lang": "zh", "category": "general",
               "urgent": False, "support": [], "channel": "desk"} for n in range(8)]
    (corrections / "2026-12-05.jsonl").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in taught), "utf-8")
    output = train("--train", str(tmp_path / "train.jsonl"), "--with-corrections",
                   "--corrections-dir", str(corrections), "--models-dir", str(models))
    assert "corrections (8)" in output
    second = resolve(models / "current")
    assert second != first
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["training_data"]["examples"] == 45 + 8

    reloads = {"done": 0}

    def keep_reloading():
        for i in range(10_000):
            make_current((first, second)[i % 2], models)
            rpc.routing.reload_model()
            reloads["done"] += 1
            eventlet.sleep(0.01)

    def publish_issues(first_n: int, count: int, text: str) -> list[str]:
        events = [stored_issue(store, f"WH-20261205-{n:04d}", text)
                  for n in range(first_n, first_n + count)]
        for event in events:
            publish(amqp, event.model_dump(mode="json"))
            eventlet.sleep(0.002)
        return [event.issue_id for event in events]

    def routed(issue_ids: list[str]):
        records = [store.get(issue_id) for issue_id in issue_ids]
        done = all(r.status.value in ("dispatched", "merged", "needs_triage") for r in records)
        return done and records

    reloader = eventlet.spawn(keep_reloading)
    during_ids = publish_issues(100, 40, "暖气片冰凉，屋里好冷")
    during = wait_until(lambda: routed(during_ids), timeout=30)
    reloader.kill()
    assert reloads["done"] >= 5

    make_current(second, models)
    assert rpc.routing.reload_model() == {"model_version": second.name.removeprefix("router-"),
                                          "other_processes_told": True}
    for record in during:
        steps = [s.step for s in record.timeline]
        assert (steps.count("dispatched") + steps.count("merged")
                + steps.count("needs_triage")) == 1, record.issue_id
    assert {r.category for r in during if r.status.value != "needs_triage"} <= {"heating"}
    # What the desk taught is known after the reload.
    assert explain(rpc, f"{TAUGHT}（9号楼）")["classifier"]["top"][0]["category"] == "general"


def test_a_broken_artefact_is_refused_on_reload_and_the_old_model_stays(
        container_factory, config, models, rpc):
    container_factory(RoutingService, config).start()
    before = explain(rpc, "暖气片冰凉")["classifier"]["model_version"]
    broken = models / "router-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    make_current(broken, models)
    with pytest.raises(InvalidPayload) as refused:
        rpc.routing.reload_model()
    assert "old one stays" in str(refused.value)
    assert explain(rpc, "暖气片冰凉")["classifier"]["model_version"] == before


def test_the_bundled_model_is_what_routing_loads_when_no_model_is_named(
        container_factory, whistle_config, rpc):
    from services.routing.classifier import BUNDLED_MODEL

    container_factory(RoutingService, {**whistle_config, cfg.ROUTING_MODEL: ""}).start()
    explained = explain(rpc, "厨房里一股臭鸡蛋味，头有点晕")
    assert explained["classifier"]["model_version"] == resolve(BUNDLED_MODEL).name.removeprefix(
        "router-")
    assert explained["category"] == "gas_leak" and explained["urgency"]["urgent"] is True
