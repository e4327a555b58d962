"""End to end: the desk triages an unsure report, reroutes it, and the export has it.

``whistle up`` as a real process, driven over HTTP only, the export through the CLI.
"""

import json
import subprocess

import pytest
import requests

from shared import config as cfg
from tests.e2e.conftest import WHISTLE
from tests.e2e.test_whole_chain import bearer, poll

pytestmark = pytest.mark.e2e

REPORT = {
    "description": "东门路灯不亮好几天了，路边垃圾成堆也没人清，晚上走路心里发毛",
    "location": {"community": "缤泰社区", "address": "丽德花园东门"},
    "contact": {"name": "周阿姨", "phone": "13912345678"},
    "channel": "hotline",
}


def test_unsure_report_triaged_then_rerouted_and_exported(whistle_processes, whistle_env,
                                                          tmp_path):
    whistle_env.setdefault(cfg.SECRET, cfg.DEV_SECRET)
    # The keyword rules read it (known matches); under 60% the desk decides.
    app = whistle_processes(env={cfg.ROUTING_MODEL: "keywords", cfg.TRIAGE_THRESHOLD: "0.6"})
    base, desk = app.url, bearer(whistle_env, "desk", "desk-wang")

    issue_id = requests.post(f"{base}/issues", json=REPORT, timeout=5).json()["issue_id"]

    def get():
        return requests.get(f"{base}/issues/{issue_id}", headers=desk, timeout=5).json()

    held = poll(get, lambda i: i["status"] == "needs_triage")
    assert [s["category"] for s in held["triage"]["suggestions"]] == ["street_light", "rubbish"]

    # The desk picks the lamp; urban management leads and reports in.
    triaged = requests.post(f"{base}/issues/{issue_id}/triage", headers=desk, timeout=5,
                            json={"category": "street_light", "reason": "先修路灯"})
    assert triaged.status_code == 200, triaged.text
    assert [a["agency"] for a in triaged.json()["assignments"]] == ["urban_management"]
    urban = bearer(whistle_env, "urban_management", "um-1")
    poll(lambda: requests.get(f"{base}/agencies/urban_management/assignments", headers=urban,
                              timeout=5).json()["assignments"],
         lambda assigned: [a["issue_id"] for a in assigned] == [issue_id])

    # On second thought it is the rubbish: urban management is withdrawn, sanitation added.
    rerouted = requests.post(f"{base}/issues/{issue_id}/reroute", headers=desk, timeout=5,
                             json={"category": "rubbish", "support": [],
                                   "reason": "路灯昨天已修好，主要是垃圾"})
    assert rerouted.status_code == 200, rerouted.text
    assert [a["agency"] for a in rerouted.json()["assignments"]] == ["sanitation"]
    assert [a["agency"] for a in rerouted.json()["withdrawn"]] == ["urban_management"]
    assert requests.get(f"{base}/agencies/urban_management/assignments", headers=urban,
                        timeout=5).json()["assignments"] == []

    def told():
        history = requests.get(f"{base}/issues/{issue_id}/notifications", headers=desk,
                               timeout=5).json()["notifications"]
        return [n["kind"] for n in history]

    kinds = poll(told, lambda k: "rerouted" in k and "dispatched" in k)
    assert kinds.count("rerouted") == 1 and kinds.count("dispatched") == 1

    out = tmp_path / "corrections.jsonl"

    def export() -> list[dict]:
        done = subprocess.run([WHISTLE, "routing", "corrections", "--export", str(out)],
                              env=whistle_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    # One example per report, the desk's latest word (the reroute, not the triage).
    (example,) = poll(export, lambda found: found and found[0]["category"] == "rubbish")
    assert (example["category"], example["support"], example["channel"]) == (
        "rubbish", [], "hotline")
    assert "13912345678" not in example["text"]
