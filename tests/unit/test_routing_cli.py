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
