"""The learned router's pure parts: features, hazard cues, thresholds, evaluation
maths, and an artefact's round trip through the classifier seam."""

import json

import numpy as np
import pytest

from services.routing.classifier import Classifier, ModelLoadError, load_classifier
from services.routing.evaluation import Guess, per_category, score
from services.routing.features import display_term, fold, terms, weighed_words
from services.routing.hazards import hazard_reasons
from services.routing.learned import (
    MODELS_DIR,
    LearnedClassifier,
    load,
    publish,
    read_router,
    save,
)
from services.routing.rules import load_rules
from services.routing.training import (
    confidence_threshold,
    corpus_hash,
    fit_temperature,
    train_router,
    urgency_threshold,
)

RULES = load_rules()

# ------------------------------------------------------------------- features


def test_han_runs_give_one_to_three_character_ngrams():
    assert terms("臭鸡蛋") == ["臭", "鸡", "蛋", "臭鸡", "鸡蛋", "臭鸡蛋"]


def test_a_words_pieces_are_credited_to_the_word_as_the_report_wrote_it():
    text = "The Radiator is cold, the radiators too"
    weights = dict.fromkeys(set(terms(text)), 0.0)
    for term in terms("radiator"):  # every term of "radiator" weighs 0.1...
        weights[term] = 0.1
    weights["c: col"] = 0.3  # ...and one piece of "cold"
    shown = weighed_words(text, weights, 8)
    words = dict(shown)
    # "Radiator" as written, once: its word and its 18 pieces; "radiators" shares the
    # pieces it has in common with it (those that do not touch the word's end)
    assert list(words) == ["Radiator", "radiators", "cold"]
    assert words["Radiator"] > words["radiators"] > 0 and words["cold"] == 0.3
    assert weighed_words(text, {"w:the": -1.0, "c: the ": 0.5}, 8) == []  # nothing for it


def test_han_ngrams_are_shown_as_the_report_wrote_them():
    text = "樓道的電燈壞了, 电灯"
    assert weighed_words(text, {"电灯": 0.4, "楼道": 0.2, "坏": -0.1}, 8) == [
        ("電燈", 0.4), ("樓道", 0.2)]


def test_latin_words_give_words_pairs_and_pieces():
    found = terms("Sparks sparking")
    assert "w:sparks" in found and "w:sparks sparking" in found
    assert "c: spar" in found and found.count("c: spa") == 2  # shared by both words


def test_traditional_characters_fold_to_simplified_and_full_width_to_ascii():
    assert fold("電線冒煙") == "电线冒烟"
    assert fold("ＧＡＳ") == "gas"
    assert terms("電線") == terms("电线")


@pytest.mark.parametrize(("traditional", "simplified"), [
    ("剛才樓梯間長時間冒煙", "刚才楼梯间长时间冒烟"),  # characters a hand-kept table missed
    ("颱風把電線桿吹歪了", "台风把电线杆吹歪了"),
    ("廚房的燃氣報警器響個不停", "厨房的燃气报警器响个不停"),
    ("頭髮乾了", "头发干了"),
])
def test_traditional_characters_fold_by_opencc_one_for_one(traditional, simplified):
    assert fold(traditional) == simplified
    assert len(fold(traditional)) == len(traditional)  # evidence points at what was written


def test_display_terms_read_plainly():
    assert display_term("w:rotten eggs") == "rotten eggs"
    assert display_term("c: spar") == "spar…"
    assert display_term("c:ing ") == "…ing"
    assert display_term("冒火花") == "冒火花"


# ---------------------------------------------------------------- hazard cues


@pytest.mark.parametrize("text", [
    "楼顶的电线被风刮断了搭在树上，下面就是小孩玩的地方",  # a cable on a tree
    "厨房里一股臭鸡蛋味",                                   # rotten eggs
    "插座那里一直在冒火花",                                 # sparks
    "楼上漏水顺着灯往下滴，灯里面全是水",                   # water on wiring
    "墙上那条裂缝这几天越来越宽了",                         # a widening crack
    "电梯卡在两层中间，里面困了一个老人",                   # someone trapped now
    "下水道堵了，粪水从地漏倒灌进屋里",                     # sewage into homes
    "There's a smell like rotten eggs in the hallway",
    "the socket by the sink is sparking",
    "water is dripping onto the fuse box",
    "a cable is dangling on the tree by the school gate",
    "我家kitchen一股很重的gas味",                            # mixed: gas as a word
    "牆上那條裂縫這幾天越來越寬了",                         # traditional characters
    "剛才電梯卡在兩層中間，裡面困了一個老人",
])
def test_indirect_descriptions_of_hazards_are_cues(text):
    assert hazard_reasons(text)


@pytest.mark.parametrize("text", [
    "没有煤气味，就是灶打不着火",          # denied
    "there is no gas smell, the hob just won't light",
    "消防通道堵了，万一着火怎么办",        # imagined, not happening
    "car blocking the fire hydrant for two days",
    "楼道灯不亮了，好几天了",              # a nuisance
])
def test_denied_imagined_or_harmless_mentions_are_not_cues(text):
    assert hazard_reasons(text) == []


# ----------------------------------------------------------------- thresholds


def test_urgency_threshold_keeps_the_recall_asked_for():
    p = np.array([0.9, 0.7, 0.4, 0.2, 0.1])
    urgent = np.array([True, True, True, False, False])
    assert urgency_threshold(p, np.zeros(5, bool), urgent, 1.0) == 0.4
    # A cue that already catches the weakest urgent report lets the threshold rise.
    forced = np.array([False, False, True, False, False])
    assert urgency_threshold(p, forced, urgent, 1.0) == 0.7


def test_confidence_threshold_is_the_lowest_with_the_precision_asked_for():
    p = np.array([0.95, 0.9, 0.8, 0.6, 0.5])
    right = np.array([True, True, True, False, True])
    assert confidence_threshold(p, right, 1.0) == 0.8
    assert confidence_threshold(p, right, 0.8) == 0.5
    assert confidence_threshold(p, np.zeros(5, bool), 0.9) == 1.0


def test_temperature_sharpens_scores_that_are_right():
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert fit_temperature(scores, np.array([0, 1, 0])) > fit_temperature(
        scores, np.array([0, 1, 1]))


# ----------------------------------------------------------- evaluation maths


def test_lead_agency_and_sector_come_from_the_rules():
    truth = [{"category": "noise", "urgent": False},          # urban_management, other
             {"category": "pipe_leak", "urgent": True},       # water, utilities
             {"category": "stairwell_light", "urgent": False}]  # property_manager, housing
    guesses = [Guess("illegal_parking", False),   # another category, same lead agency
               Guess("gas_leak", True),           # another agency, same sector
               Guess("power_cut", True)]          # another sector; a false alarm
    s = score(truth, guesses, RULES)
    assert s.category_accuracy == 0
    assert s.agency_accuracy == pytest.approx(1 / 3)
    assert s.sector_accuracy == pytest.approx(2 / 3)
    assert (s.urgent_recall, s.false_urgent_rate, s.urgent_precision) == (1.0, 0.5, 0.5)


def test_macro_f1_weighs_each_category_equally():
    truth = [{"category": "noise", "urgent": False}] * 3 + [{"category": "tree", "urgent": False}]
    guesses = [Guess("noise", False)] * 4
    # noise: precision 3/4, recall 1 -> 6/7; tree: 0
    assert score(truth, guesses, RULES).macro_f1 == pytest.approx((6 / 7) / 2)


def test_per_category_scores_each_true_category_alone():
    truth = [{"category": "noise", "urgent": False}, {"category": "tree", "urgent": True}]
    by = per_category(truth, [Guess("noise", False), Guess("noise", False)], RULES)
    assert by["noise"].category_accuracy == 1 and by["tree"].category_accuracy == 0
    assert by["tree"].urgent_recall == 0


def test_score_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="1 reports but 0 guesses"):
        score([{"category": "noise", "urgent": False}], [], RULES)


# ------------------------------------------------------- artefact round trip

_SEEDS = {
    "gas_leak": (["厨房里有很重的煤气味", "闻到燃气味了，灶台那边", "a strong smell of gas in the kitchen",
                  "楼道里煤气味很大", "gas smell on the stairs"], True),
    "noise": (["广场舞音响太吵了", "工地晚上还在施工，吵得睡不着", "loud music from the shop every night",
               "楼下饭店的风机噪音很大", "construction noise at 6am"], False),
    "heating": (["暖气不热，屋里才十几度", "暖气片冰凉", "the radiators are cold again",
                 "家里暖气一点都不热", "heating is not working, the flat is freezing"], False),
}


def _examples(copies: int = 3) -> list[dict]:
    examples = []
    for category, (texts, urgent) in _SEEDS.items():
        for n in range(copies):
            for i, text in enumerate(texts):
                examples.append({"id": f"r{len(examples)}", "text": f"{text}，第{n}{i}次",
                                 "category": category, "urgent": urgent})
    return examples


@pytest.fixture(scope="module")
def router():
    return train_router(_examples())


def test_a_trained_router_round_trips_through_its_artefact(router, tmp_path):
    folder = save(router, tmp_path)
    assert folder.name == f"router-{router.version}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["training_data"]["sha256_12"] == corpus_hash(_examples())
    assert set(manifest["cross_validation"]) >= {"category_accuracy", "urgent_recall"}
    again = read_router(folder)
    for text in ("煤气味好重", "the heating is off", "太吵了"):
        before, after = LearnedClassifier(router).classify(text), load(folder).classify(text)
        assert [c for c, _ in before.top] == [c for c, _ in after.top]
        assert [p for _, p in before.top] == pytest.approx([p for _, p in after.top], abs=1e-5)
        assert (before.urgent, before.confident) == (after.urgent, after.confident)
    assert again.version == router.version and again.urgent_at == router.urgent_at


def test_an_artefact_is_never_written_over(router, tmp_path):
    folder = save(router, tmp_path)
    before = (folder / "weights.npz").read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        save(router, tmp_path)
    assert (folder / "weights.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no half-written folder


def test_the_seam_loads_the_artefact_current_names(router, tmp_path):
    publish(save(router, tmp_path), tmp_path)
    classifier = load_classifier(tmp_path / "current")
    assert isinstance(classifier, Classifier) and classifier.model_version == router.version
    reading = classifier.classify("厨房里煤气味很重")
    assert reading.best == "gas_leak" and reading.urgent
    assert any("gas" in reason for reason in reading.urgent_reasons)
    assert reading.evidence and reading.evidence[0][1] > 0
    assert sum(p for _, p in reading.top) <= 1 + 1e-6


def test_a_broken_artefact_refuses_to_load(router, tmp_path):
    folder = save(router, tmp_path)
    (folder / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        load_classifier(folder)


def test_an_artefact_of_another_format_refuses_to_load(router, tmp_path):
    folder = save(router, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ModelLoadError, match="format 99"):
        load_classifier(folder)


# ----------------------------------------------------------- the bundled model


def test_keywords_can_be_chosen_over_the_bundled_model():
    assert load_classifier("keywords") is None


def test_the_bundled_model_loads_through_the_seam_in_under_three_seconds_of_cpu():
    import time

    started = time.process_time()
    classifier = load_classifier(None)
    assert time.process_time() - started < 3.0
    assert isinstance(classifier, LearnedClassifier)
    manifest = classifier.router.manifest
    assert manifest["training_data"]["examples"] >= 800
    reading = classifier.classify("楼顶的电线被风刮断了搭在树上，下面就是小孩玩的地方")
    assert reading.best == "flying_wire" and reading.urgent


UNSURE = "有个问题想反映一下"  # says nothing: the TF-IDF model is unsure, the cascade looks again


def test_with_a_background_loader_the_model_serves_before_its_encoder_is_loaded():
    pending = []
    classifier = load(MODELS_DIR / "current", background=pending.append)
    stage = classifier.router.embedding
    assert stage is not None and not stage.ready and len(pending) == 1
    early = classifier.classify(UNSURE)
    assert early.extra["stage"] == "tfidf (encoder not loaded)"
    pending[0]()  # what the background thread does
    assert stage.ready and not stage.failed
    later, eager = classifier.classify(UNSURE), load(MODELS_DIR / "current").classify(UNSURE)
    assert later.extra["stage"] == eager.extra["stage"] == "tfidf+embeddings"
    assert [c for c, _ in later.top] == [c for c, _ in eager.top]
    assert [p for _, p in later.top] == pytest.approx([p for _, p in eager.top], abs=1e-5)
    assert early.urgent == later.urgent  # the urgency decision does not use the encoder


def test_an_encoder_that_fails_in_the_background_leaves_the_tfidf_model_serving(monkeypatch):
    from services.routing import learned

    def broken():
        raise OSError("weights unreadable")

    monkeypatch.setattr(learned, "load_encoder", broken)
    pending = []
    classifier = load(MODELS_DIR / "current", background=pending.append)
    pending[0]()
    assert "weights unreadable" in classifier.router.embedding.failed
    assert classifier.classify(UNSURE).extra["stage"] == "tfidf (encoder not loaded)"


def test_a_missing_encoder_package_is_an_error_at_load_not_later(monkeypatch):
    from services.routing import learned

    monkeypatch.setattr(learned, "ENCODER", "no_such_encoder_module")
    with pytest.raises(ModuleNotFoundError, match="no_such_encoder_module"):
        load(MODELS_DIR / "current", background=lambda work: None)


def test_training_with_embeddings_weighs_the_cascade_without_the_urgency_cascade():
    # The category cascade is cross-validated whenever there are embeddings; it once was
    # only when the urgency cascade was asked for too, and `train` shipped TF-IDF alone.
    router = train_router(_examples(), embeddings=True)
    assert "embedding_accuracy" in router.manifest["cross_validation"]
    assert "urgency_cascade" not in router.manifest["cross_validation"]


def test_confident_share_and_its_accuracy():
    truth = [{"category": "noise", "urgent": False}] * 4
    guesses = [Guess("noise", False, True), Guess("tree", False, True),
               Guess("tree", False, False), Guess("noise", False, False)]
    s = score(truth, guesses, RULES)
    assert s.confident_share == 0.5 and s.confident_agency_accuracy == 0.5


def test_evaluate_prints_the_split_figures_overall_and_per_category(router, tmp_path):
    from click.testing import CliRunner

    from whistle.cli import cli

    folder = save(router, tmp_path / "models")
    split = tmp_path / "split.jsonl"
    split.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n"
                             for e in _examples(1)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["routing", "evaluate", "--split", str(split),
                                      "--model", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["model_version"] == router.version
    assert figures["overall"]["reports"] == 15
    assert set(figures["per_category"]) == {"gas_leak", "noise", "heating"}
    assert figures["per_category"]["gas_leak"]["urgent_reports"] == 5
    text = CliRunner().invoke(cli, ["routing", "evaluate", "--split", str(split),
                                    "--model", str(folder)]).stdout
    assert "lead agency" in text and "urgent recall" in text and "gas_leak" in text


def test_evaluate_names_a_model_that_cannot_be_loaded(tmp_path):
    from click.testing import CliRunner

    from whistle.cli import cli

    result = CliRunner().invoke(cli, ["routing", "evaluate", "--model", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_an_urgency_cascade_round_trips_and_looks_again_only_inside_its_band(tmp_path):
    from dataclasses import replace

    from services.routing.learned import UrgencyCascade, UrgencyStacker

    router = read_router(MODELS_DIR / "current")  # the bundled model has the encoder
    assert router.embedding is not None
    weights = np.random.default_rng(16)
    second = UrgencyCascade(
        weights.normal(size=router.embedding.coef.shape[1]).astype(np.float32), 0.5,
        UrgencyStacker(weights.normal(size=len(router.stacker.coef) + 1), -0.2),
        urgent_at=0.4, escalate_from=0.05, escalate_below=0.9)
    again = read_router(save(replace(router, urgency_cascade=second), tmp_path))
    assert (again.urgency_cascade.escalate_from, again.urgency_cascade.escalate_below,
            again.urgency_cascade.urgent_at) == (0.05, 0.9, 0.4)
    assert np.allclose(again.urgency_cascade.coef, second.coef)
    assert np.allclose(again.urgency_cascade.stacker.coef, second.stacker.coef)
    text = "小区垃圾桶满了没人清"  # no hazard cue: the model alone decides

    def reading(escalate_from: float, escalate_below: float):
        band = replace(second, escalate_from=escalate_from, escalate_below=escalate_below)
        return LearnedClassifier(replace(router, urgency_cascade=band)).classify(text)

    always = reading(0.0, 1.01)
    assert always.extra["urgency_stage"] == "tfidf+embeddings"
    assert always.extra["urgent_threshold"] == 0.4
    assert always.urgent == (always.extra["urgent_probability"] >= 0.4)
    never = reading(1.0, 1.01)
    assert never.extra["urgency_stage"] == "tfidf" and not never.urgent
    certain = reading(0.0, 0.0)
    assert certain.extra["urgency_stage"] == "tfidf" and certain.urgent
    plain = LearnedClassifier(router).classify(text)
    assert plain.extra["urgency_stage"] == "tfidf" and not plain.urgent


def test_routing_loads_the_encoder_in_a_real_thread_off_the_hub():
    import eventlet
    from eventlet import patcher

    from services.routing.model_provider import off_the_hub

    real_threading = patcher.original("threading")
    ran_in = []
    off_the_hub(lambda: ran_in.append(real_threading.get_ident()))
    for _ in range(500):
        if ran_in:
            break
        eventlet.sleep(0.01)  # the hub runs on meanwhile: that is the point
    assert ran_in and ran_in[0] != real_threading.get_ident()


def test_an_urgency_model_per_category_scores_as_trained_and_round_trips(tmp_path):
    from scipy import sparse

    from services.routing.learned import urgency_score
    from services.routing.training import _per_category, fit_text_models

    examples = _examples()
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    urgent = [e["urgent"] for e in examples]
    category, urgency = fit_text_models(texts, categories, urgent, 1.0, 5.0,
                                        urgency_per_category=True)
    assert urgency.classes == ["urgent", *category.classes]
    assert urgency.coef.shape == (len(category.classes) + 1, len(category.terms))
    # The runtime score is the shared weights plus each category's, weighed by the
    # category probabilities: the same as the SVM on the weighed copies of the terms.
    text = "厨房里煤气味很重，暖气也不热"
    columns, values = category.vector(text)
    probabilities = category.probabilities(columns, values)
    score, parts = urgency_score(urgency, columns, values, probabilities)
    dense = np.zeros((1, len(category.terms)), dtype=np.float32)
    dense[0, columns] = values
    expected = (_per_category(sparse.csr_matrix(dense), probabilities[None].astype(np.float32))
                @ urgency.coef.reshape(-1)) + urgency.intercept[0]
    assert score == pytest.approx(float(expected[0]), abs=1e-4)
    assert parts.sum() + urgency.intercept[0] == pytest.approx(score, abs=1e-5)

    router = train_router(examples, urgency_per_category=True)
    assert router.manifest["cross_validation"]["urgency_per_category"] is True
    again = read_router(save(router, tmp_path))
    assert again.urgency.coef.shape == router.urgency.coef.shape
    assert again.urgency.classes == router.urgency.classes
    for text in ("煤气味好重", "the heating is off", "太吵了"):
        before = LearnedClassifier(router).classify(text)
        after = load(again_path(tmp_path)).classify(text)
        assert (before.urgent, before.urgent_reasons) == (after.urgent, after.urgent_reasons)
        assert before.extra["urgent_probability"] == pytest.approx(
            after.extra["urgent_probability"], abs=1e-4)
    reading = LearnedClassifier(router).classify("厨房里煤气味很重")
    assert reading.urgent and any("urgency model" in r or "gas" in r
                                  for r in reading.urgent_reasons)


def again_path(folder):
    return next(folder.glob("router-*"))
