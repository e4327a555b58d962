"""``whistle routing``: malformed corpus lines and a missing corrections directory named
in one line (exit 2), ``evaluate --compare`` as a table, ``reload`` of model and rules."""

import json
from pathlib import Path

import pytest

from services.routing.corrections import CorpusError, load_corrections, read_corpus
from tests.support.cli import one_error_line, run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = {"id": "r1", "text": "楼上漏水", "lang": "zh", "category": "pipe_leak",
           "urgent": False, "support": [], "channel": "desk"}


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(("line", "problem"), [
    (json.dumps({k: v for k, v in EXAMPLE.items() if k != "text"}), 'field "text" is missing'),
    ("{not json", "not JSON"),
    (json.dumps({**EXAMPLE, "category": "nope"}), "field \"category\": unknown category 'nope'"),
    (json.dumps({**EXAMPLE, "urgent": "maybe"}), 'field "urgent"'),
])
def test_a_bad_corpus_line_is_named_by_file_line_and_field(tmp_path, line, problem):
    split = write(tmp_path / "split.jsonl", json.dumps(EXAMPLE), line)
    with pytest.raises(CorpusError, match=f"split.jsonl:2: {problem}"):
        read_corpus(split, ["pipe_leak"])
    for command in (["routing", "evaluate", "--split", str(split)],
                    ["routing", "train", "--train", str(split), "--no-publish",
                     "--models-dir", str(tmp_path / "models")]):
        result = run(*command)
        assert result.exit_code == 2
        assert f"split.jsonl:2: {problem}" in one_error_line(result)
    assert not (tmp_path / "models").exists()


def test_the_bundled_corpus_reads_cleanly():
    assert len(read_corpus(ROOT / "corpus" / "test.jsonl")) > 300


def test_a_missing_corrections_directory_is_an_error_an_empty_one_has_none(tmp_path):
    split = write(tmp_path / "train.jsonl", json.dumps(EXAMPLE))
    result = run("routing", "train", "--train", str(split), "--with-corrections",
                 "--corrections-dir", str(tmp_path / "nowhere"), "--no-publish",
                 "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 2
    assert one_error_line(result) == (f"whistle routing train: no corrections directory "
                                      f"{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    assert load_corrections(tmp_path / "empty") == []


FIGURES = json.loads((ROOT / "docs" / "routing-figures.json").read_text(encoding="utf-8"))


def test_compare_prints_a_table_and_json_only_when_asked(monkeypatch):
    monkeypatch.setattr("services.routing.comparison.compare",
                        lambda *args, **kwargs: FIGURES["comparison"])
    text = run("routing", "evaluate", "--compare")
    assert text.exit_code == 0, text.output
    assert "{" not in text.output and "'" not in text.output
    rows = {line.split()[0]: line for line in text.output.splitlines()[2:-1]}
    assert set(rows) == {"keywords", "tfidf", "embeddings", "cascade"}
    assert "96.9%" in rows["cascade"]
    as_json = run("routing", "evaluate", "--compare", "--json")
    assert json.loads(as_json.output) == FIGURES["comparison"]


class FakeRouting:
    def __init__(self, calls, refuse=()):
        self.calls, self.refuse = calls, refuse

    def reload_rules(self):
        self.calls.append("rules")
        if "rules" in self.refuse:
            from shared.errors import InvalidPayload
            raise InvalidPayload("rules not reloaded: line 3", [])
        return {"rules": 21, "source": "rules.yaml", "other_processes_told": True}

    def reload_model(self):
        self.calls.append("model")
        return {"model_version": "router-1", "other_processes_told": True}


@pytest.fixture
def rpc_calls(monkeypatch):
    calls, refuse = [], []

    class Proxy:
        def __init__(self, *args, **kwargs):
            self.routing = FakeRouting(calls, refuse)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("nameko.standalone.rpc.ClusterRpcProxy", Proxy)
    return calls, refuse


@pytest.mark.parametrize(("flags", "reloaded"), [
    ([], ["model"]), (["--model"], ["model"]), (["--rules"], ["rules"]),
    (["--model", "--rules"], ["rules", "model"])])
def test_reload_reloads_what_it_is_asked_and_both_when_both(rpc_calls, flags, reloaded):
    calls, _ = rpc_calls
    result = run("routing", "reload", *flags)
    assert result.exit_code == 0, result.output
    assert calls == reloaded
    assert [line.split(":")[0] for line in result.output.splitlines()[:-1]] == [
        f"routing reloaded its {what}" for what in reloaded]


def test_reload_of_both_stops_at_rules_that_do_not_load(rpc_calls):
    calls, refuse = rpc_calls
    refuse.append("rules")
    result = run("routing", "reload", "--rules", "--model")
    assert result.exit_code == 1 and calls == ["rules"]
    assert "(the model was not reloaded)" in one_error_line(result)

