"""Calibrating a model's urgency threshold on held-out reports (``whistle routing calibrate``)."""

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from services.routing.calibration import (
    CalibrationError,
    calibrate,
    false_alarm_threshold,
    urgency_figures,
)
from services.routing.learned import (
    MODELS_DIR,
    LearnedClassifier,
    UrgencyCascade,
    UrgencyStacker,
    read_router,
    resolve,
)
from services.routing.learned import publish as make_current
from services.routing.training import urgency_threshold
from tests.support.cli import one_error_line, run

# Held out from the bundled model: the second urgency addition was never trained on by it.
HELD_OUT = MODELS_DIR.parents[2] / "corpus" / "urgency-addition-2.jsonl"


@pytest.fixture(scope="module")
def bundled():
    return LearnedClassifier(read_router(MODELS_DIR / "current", with_encoder=False))


@pytest.fixture(scope="module")
def held_out():
    return [json.loads(line) for line in HELD_OUT.read_text(encoding="utf-8").splitlines()]


def test_the_threshold_is_the_highest_that_keeps_the_recall_on_the_held_out_reports(
        bundled, held_out):
    now = datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)
    result = calibrate(bundled, held_out, "held.jsonl", recall=0.985, now=now)
    readings = [bundled.urgency_reading(e["text"]) for e in held_out]
    probability = np.array([p for p, _ in readings])
    forced = np.array([f for _, f in readings])
    urgent = np.array([e["urgent"] for e in held_out])
    assert result.router.urgent_at == urgency_threshold(probability, forced, urgent, 0.985)
    assert result.after["urgent_recall"] >= 0.985
    assert result.before["threshold"] == round(bundled.router.urgent_at, 6)
    # The line sits at an urgent report's probability, and the next one up loses recall.
    rounded = np.round(probability[urgent & ~forced], 6)
    assert result.router.urgent_at in rounded
    higher = rounded[rounded > result.router.urgent_at]
    if higher.size:
        assert urgency_figures(probability, forced, urgent, higher.min())["urgent_recall"] < 0.985
    assert result.router.version.startswith("20261206T010203Z-")
    assert result.router.version != bundled.model_version


def test_the_reading_is_what_classify_decides_urgency_on(bundled, held_out):
    for example in held_out[:40]:
        p_urgent, forced = bundled.urgency_reading(example["text"])
        reading = bundled.classify(example["text"])
        assert reading.extra["urgent_probability"] == round(p_urgent, 4)
        assert reading.urgent == (p_urgent >= bundled.router.urgent_at or forced)


def test_the_calibrated_artefact_records_its_origin_and_only_its_threshold_changes(
        bundled, held_out, tmp_path):
    result = run("routing", "calibrate", "--held-out", str(HELD_OUT), "--model",
                 str(MODELS_DIR / "current"), "--models-dir", str(tmp_path), "--no-publish")
    assert result.exit_code == 0, result.output
    assert f"before: threshold {bundled.router.urgent_at:.4f}" in result.output
    assert "after: threshold" in result.output
    assert not (tmp_path / "current").exists()  # --no-publish
    (folder,) = tmp_path.glob("router-*")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    calibration = manifest["calibration"]
    assert calibration["from_version"] == bundled.model_version
    assert calibration["held_out"]["source"] == HELD_OUT.name
    assert calibration["held_out"]["examples"] == len(held_out)
    assert calibration["policy"] == {"urgent_recall": 0.985}
    assert manifest["training_data"] == bundled.router.manifest["training_data"]
    again = read_router(folder, with_encoder=False)
    assert again.urgent_at == calibration["after"]["threshold"] != bundled.router.urgent_at
    assert np.array_equal(again.category.coef, bundled.router.category.coef)
    assert np.array_equal(again.stacker.coef, bundled.router.stacker.coef)
    text = held_out[0]["text"]
    p_urgent, forced = LearnedClassifier(again).urgency_reading(text)
    assert LearnedClassifier(again).classify(text).urgent == (p_urgent >= again.urgent_at
                                                              or forced)


def test_publish_makes_the_calibrated_model_current(tmp_path):
    result = run("routing", "calibrate", "--held-out", str(HELD_OUT), "--model",
                 str(MODELS_DIR / "current"), "--models-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    (folder,) = tmp_path.glob("router-*")
    assert (tmp_path / "current").read_text().strip() == folder.name


def a_districts_models(tmp_path):
    """A district's own models folder, its current a copy of the bundled artefact."""
    models = tmp_path / "models"
    bundled = resolve(MODELS_DIR / "current")
    shutil.copytree(bundled, models / bundled.name)
    make_current(models / bundled.name, models)
    return models


def test_a_calibrated_model_goes_beside_the_one_calibrated_not_into_the_bundled_folder(
        tmp_path):
    """Calibrating a district's model (trained into its own folder) wrote the result into
    services/routing/model and made it the bundled current, not the district's."""
    models = a_districts_models(tmp_path)
    bundled_before = sorted(p.name for p in MODELS_DIR.iterdir())
    current_before = (MODELS_DIR / "current").read_text(encoding="utf-8")
    result = run("routing", "calibrate", "--held-out", str(HELD_OUT), "--model",
                 str(models / "current"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in MODELS_DIR.iterdir()) == bundled_before
    assert (MODELS_DIR / "current").read_text(encoding="utf-8") == current_before
    calibrated = resolve(models / "current")
    assert calibrated.parent == models and "-cal" in calibrated.name
    assert f"wrote {calibrated}" in result.output


def test_publish_makes_an_unpublished_artefact_current_and_says_if_routing_reads_it(
        tmp_path):
    models = a_districts_models(tmp_path)
    first = resolve(models / "current")
    result = run("routing", "calibrate", "--held-out", str(HELD_OUT), "--model", str(first),
                 "--no-publish")
    assert result.exit_code == 0, result.output
    (new,) = [p for p in models.glob("router-*") if p != first]
    assert resolve(models / "current") == first  # --no-publish

    result = run("routing", "publish", str(new),
                 env={"WHISTLE_ROUTING_MODEL": str(models / "current")})
    assert result.exit_code == 0, result.output
    assert resolve(models / "current") == new
    version = new.name.removeprefix("router-")
    assert f"current model: {version} (running routing picks it up on `whistle routing " \
        "reload`)" in result.output and "note:" not in result.output

    # routing reads another model: publishing here is done, and the command says a
    # reload will not take it
    result = run("routing", "publish", str(first), env={"WHISTLE_ROUTING_MODEL": ""})
    assert result.exit_code == 0, result.output
    assert resolve(models / "current") == first
    assert f"routing reads the bundled model, {MODELS_DIR / 'current'}" in result.output
    assert f"WHISTLE_ROUTING_MODEL={models / 'current'}" in result.output


def test_publish_refuses_what_is_not_an_artefact_and_keeps_the_current_one(tmp_path):
    models = a_districts_models(tmp_path)
    first = resolve(models / "current")
    broken = models / "router-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}", encoding="utf-8")
    result = run("routing", "publish", str(broken))
    assert result.exit_code == 2
    assert "is not a model artefact that loads" in one_error_line(result)
    assert "nothing was published" in result.output
    assert resolve(models / "current") == first


def test_too_few_urgent_reports_cannot_place_the_line(bundled, held_out):
    few = [e for e in held_out if not e["urgent"]] + [e for e in held_out if e["urgent"]][:5]
    with pytest.raises(CalibrationError, match="5 urgent"):
        calibrate(bundled, few, "few.jsonl")


def test_a_recall_outside_a_half_to_one_is_refused(bundled, held_out):
    with pytest.raises(CalibrationError, match="recall"):
        calibrate(bundled, held_out, "held.jsonl", recall=1.5)


def test_a_model_with_an_urgency_cascade_is_refused(bundled, held_out):
    second = UrgencyCascade(np.zeros(4, dtype=np.float32), 0.0, UrgencyStacker(np.zeros(3), 0.0),
                            urgent_at=0.4, escalate_from=0.05, escalate_below=0.9)
    cascaded = LearnedClassifier(replace(bundled.router, urgency_cascade=second))
    with pytest.raises(CalibrationError, match="urgency cascade"):
        calibrate(cascaded, held_out, "held.jsonl")


@pytest.mark.parametrize("args, problem", [
    (["--model", "keywords"], "keyword rules have no urgency threshold"),
    (["--model", "/nonexistent/router"], "does not exist"),
    (["--recall", "2", "--model", str(MODELS_DIR / "current")], "recall must be between"),
    (["--false-urgent", "0.7", "--model", str(MODELS_DIR / "current")], "below 0.5"),
    (["--false-urgent", "0.1", "--recall", "0.9"], "not both"),
])
def test_the_command_names_what_it_cannot_use_in_one_line(args, problem, tmp_path):
    result = run("routing", "calibrate", "--held-out", str(HELD_OUT), "--models-dir",
                 str(tmp_path), *args)
    assert result.exit_code == 2
    assert problem in one_error_line(result)
    assert not list(tmp_path.glob("router-*"))


def test_a_bad_held_out_line_is_named(tmp_path):
    bad = tmp_path / "held.jsonl"
    bad.write_text('{"id": "x1", "text": "t", "category": "nope", "urgent": true}\n')
    result = run("routing", "calibrate", "--held-out", str(bad), "--models-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "held.jsonl" in one_error_line(result)


def test_train_learns_from_every_file_it_is_given_and_names_them(tmp_path):
    from tests.unit.test_routing_learned import _examples

    examples = _examples()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    for path, part in ((first, examples[::2]), (second, examples[1::2])):
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in part),
                        encoding="utf-8")
    result = run("routing", "train", "--train", str(first), "--without-dev", "--add", str(second),
                 "--no-embeddings", "--models-dir", str(tmp_path / "models"), "--no-publish")
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "models").glob("router-*")
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["training_data"]
    assert data["examples"] == len(examples)
    assert data["sources"] == [f"first.jsonl ({len(examples[::2])})",
                               f"second.jsonl ({len(examples[1::2])})"]


def test_a_false_alarm_budget_gives_the_lowest_line_within_it(bundled, held_out):
    result = calibrate(bundled, held_out, "held.jsonl", false_urgent=0.3)
    readings = [bundled.urgency_reading(e["text"]) for e in held_out]
    probability = np.array([p for p, _ in readings])
    forced = np.array([f for _, f in readings])
    urgent = np.array([e["urgent"] for e in held_out])
    line = result.router.urgent_at
    assert result.after["false_urgent_rate"] <= 0.3
    # Any lower, and one more harmless report would be flagged: over the budget.
    below = probability[~urgent & ~forced & (probability < line)]
    if below.size:
        lower = urgency_figures(probability, forced, urgent, below.max())
        assert lower["false_urgent_rate"] > 0.3
    assert result.router.manifest["calibration"]["policy"] == {"false_urgent_at_most": 0.3}


@pytest.mark.parametrize("budget, line", [(0.25, 0.6), (0.5, 0.4), (0.0, 0.85), (1.0, 0.0)])
def test_the_false_alarm_line_sits_between_the_last_harmless_report_flagged_and_the_next(
        budget, line):
    probability = np.array([.9, .7, .5, .3, .1])
    urgent = np.array([True, False, False, False, False])
    assert false_alarm_threshold(probability, np.zeros(5, bool), urgent, budget) == line


def test_cues_alone_over_the_budget_cannot_be_calibrated():
    urgent = np.array([True, False, False, False, False])
    forced = np.array([False, True, True, False, False])
    with pytest.raises(CalibrationError, match="cues alone flag 2"):
        false_alarm_threshold(np.array([.9, .7, .5, .3, .1]), forced, urgent, 0.25)
