"""Train the learned router from the corpus: ``whistle routing train``.

Everything is chosen by 5-fold cross-validation on the training examples (the
training split plus, with ``--with-corrections``, the desk's corrections), never on
the frozen test split:

- the category model's regularisation ``C`` (the best out-of-fold accuracy) and
  the softmax temperature that makes its scores honest probabilities (the lowest
  out-of-fold log-loss);
- the urgency decision: the stacker (``learned.UrgencyStacker``) is fitted on the
  out-of-fold urgency scores, category probabilities and hazard cues (pooled over
  :data:`REPEATS` differently shuffled 5-fold splits), and its threshold is the
  highest at which it still catches :data:`URGENT_RECALL` of the urgent examples
  out of fold (recall first: a missed hazard costs more than a
  glance). Whether a cue alone also decides is the variant with the lower
  out-of-fold false-urgent rate at that recall;
- the confidence threshold for triage: the lowest top probability above which the
  out-of-fold guesses are right :data:`CONFIDENT_PRECISION` of the time;
- with ``embeddings=True``, the cascade: a linear model on multilingual sentence
  embeddings, consulted when the TF-IDF model's top probability is below a bound
  chosen out of fold (the bound that gains most accuracy per report escalated);
- with ``urgency_per_category=True``, an urgency SVM that weighs each term once shared
  and once per category (:func:`_per_category`), scored with the category probabilities;
- with ``urgency_cascade=True`` too (opt-in), the urgency decision's second look on the
  embedding for reports whose stacker probability is in a band chosen out of fold
  (:func:`_urgency_cascade`).

scikit-learn is imported here only: the runtime classifier (``learned.py``) needs
numpy alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.routing.corrections import read_corpus
from services.routing.features import terms
from services.routing.hazards import hazard_flags
from services.routing.learned import (
    EmbeddingStage,
    LinearTextModel,
    Router,
    UrgencyCascade,
    UrgencyStacker,
    softmax,
)

__all__ = [
    "CONFIDENT_PRECISION", "CORPUS_DIR", "URGENT_RECALL", "CrossValidation", "cascade_bound",
    "confidence_threshold", "corpus_hash", "cross_validate", "embed", "fit_temperature",
    "fit_text_models", "read_corpus", "train_router", "urgency_threshold",
]

CORPUS_DIR = Path(__file__).resolve().parents[2] / "corpus"
URGENT_RECALL = 0.985       # out-of-fold urgent recall the urgency threshold must keep
CONFIDENT_PRECISION = 0.95  # out-of-fold accuracy of the guesses routing acts on alone
C_GRID = (0.3, 1.0, 3.0)
FOLDS = 5
REPEATS = 4  # 5-fold splits pooled to set the urgency threshold (see cross_validate)
SEED = 16


def corpus_hash(examples: Sequence[dict]) -> str:
    """A short hash of the examples' texts and labels: which data a model learned from."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example["text"], example["category"], bool(example["urgent"])],
                                 ensure_ascii=False).encode())
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------------ fitting


def _vectoriser():
    from sklearn.feature_extraction.text import TfidfVectorizer

    # min_df=2: a term seen in one report only is noise, and would swell the artefact.
    return TfidfVectorizer(analyzer=terms, sublinear_tf=True, min_df=2, dtype=np.float32)


def _svm(c: float, balanced: bool = False):
    from sklearn.svm import LinearSVC

    # A linear SVM: as accurate as a logistic regression on these features, and a
    # fit takes a tenth of a second instead of seconds (cross-validation fits dozens).
    # Its solver visits examples in a random order: seeded, so a retrain on the same data
    # gives the same model (unseeded, the urgency threshold moved between runs).
    return LinearSVC(C=c, class_weight="balanced" if balanced else None, random_state=SEED)


def _logistic(c: float, balanced: bool = False):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, class_weight="balanced" if balanced else None)


def _scores(model, matrix, classes: list[str]) -> np.ndarray:
    """decision_function's columns in ``classes`` order (a fold may lack a rare class:
    its column stays very low)."""
    scores = model.decision_function(matrix)
    if scores.ndim == 1:
        return scores
    out = np.full((matrix.shape[0], len(classes)), -10.0)
    for j, name in enumerate(model.classes_):
        out[:, classes.index(name)] = scores[:, j]
    return out


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The softmax scale with the lowest log-loss of ``scores`` against ``truth``.

    >>> fit_temperature(np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 1])) >= 5
    True
    """
    best, best_loss = 1.0, np.inf
    for scale in np.geomspace(0.5, 20, 40):
        probabilities = softmax(scale * scores)
        loss = -np.log(probabilities[np.arange(len(truth)), truth] + 1e-12).mean()
        if loss < best_loss:
            best, best_loss = float(scale), loss
    return best


def _per_category(matrix, weights: np.ndarray):
    """``[X, X·w_1, ..., X·w_K]``: each report's terms once shared and once per category,
    each copy weighed by the report's share of that category (1 for its known category
    when training, the category model's probabilities when scoring). A linear model on it
    has a shared weight per term plus one per category (``learned.urgency_score``)."""
    from scipy import sparse

    blocks = [matrix] + [sparse.diags(weights[:, k]) @ matrix for k in range(weights.shape[1])]
    return sparse.hstack(blocks, format="csr")


def _fit_urgency(matrix, urgent: np.ndarray, c: float, categories: np.ndarray | None,
                 count: int = 0):
    """The urgency SVM; per category when given each report's category index (of
    ``count`` categories)."""
    if categories is None:
        return _svm(c, balanced=True).fit(matrix, urgent)
    weights = np.eye(count, dtype=np.float32)[categories]
    return _svm(c, balanced=True).fit(_per_category(matrix, weights), urgent)


def _urgency_scores(model, matrix, probabilities: np.ndarray | None) -> np.ndarray:
    """The urgency SVM's scores (``probabilities``: the category model's, for a model
    trained per category)."""
    if probabilities is None:
        return model.decision_function(matrix)
    return model.decision_function(_per_category(matrix, probabilities.astype(np.float32)))


def fit_text_models(texts: Sequence[str], categories: Sequence[str], urgent: Sequence[bool],
                    c: float, scale: float, urgency_per_category: bool = False,
                    ) -> tuple[LinearTextModel, LinearTextModel]:
    """The category and urgency models on one TF-IDF vocabulary.

    ``urgency_per_category``: the urgency model has a shared row and one row per category
    (in the category model's class order; see :func:`_per_category`)."""
    vectoriser = _vectoriser()
    matrix = vectoriser.fit_transform(texts)
    vocabulary_terms = vectoriser.get_feature_names_out().tolist()
    vocabulary = {t: i for i, t in enumerate(vocabulary_terms)}
    idf = vectoriser.idf_.astype(np.float32)
    category_model = _svm(c).fit(matrix, categories)
    classes = [str(c) for c in category_model.classes_]
    urgent = np.asarray(urgent, bool)
    if urgency_per_category:
        index = np.array([classes.index(name) for name in categories])
        urgency_model = _fit_urgency(matrix, urgent, c, index, len(classes))
        coef = urgency_model.coef_.reshape(len(classes) + 1, len(vocabulary_terms))
        urgency_classes = ["urgent", *classes]
    else:
        urgency_model = _fit_urgency(matrix, urgent, c, None)
        coef, urgency_classes = urgency_model.coef_, ["urgent"]
    return (
        LinearTextModel(vocabulary, idf, category_model.coef_.astype(np.float32),
                        category_model.intercept_.astype(np.float32), classes,
                        vocabulary_terms, scale),
        LinearTextModel(vocabulary, idf, coef.astype(np.float32),
                        urgency_model.intercept_.astype(np.float32), urgency_classes,
                        vocabulary_terms),
    )


def embed(texts: Sequence[str], encoder=None) -> np.ndarray:
    """The texts' multilingual sentence embeddings (batched: training only)."""
    from services.routing.learned import load_encoder

    encoder = encoder or load_encoder()
    return np.vstack([encoder.encode(list(texts[i:i + 64])) for i in range(0, len(texts), 64)])


def _fit_embedding(vectors: np.ndarray, categories: Sequence[str],
                   classes: list[str]) -> EmbeddingStage:
    model = _logistic(EMBEDDING_C).fit(vectors, categories)
    order = [list(model.classes_).index(name) for name in classes]
    return EmbeddingStage(model.coef_[order].astype(np.float32),
                          model.intercept_[order].astype(np.float32))


EMBEDDING_C = 10.0  # the embedding model's regularisation (L2-normalised 512-d vectors)


# --------------------------------------------------------------- cross-validation


@dataclass
class CrossValidation:
    """Out-of-fold predictions on the training examples, and what was chosen from them."""

    classes: list[str]
    c: float
    scale: float
    tfidf: np.ndarray                # out-of-fold category probabilities, TF-IDF model
    urgency_scores: np.ndarray       # out-of-fold urgency model scores
    cues: np.ndarray                 # hazard cues per example (no training involved)
    urgent_probability: np.ndarray   # out-of-fold stacker probabilities, pooled over repeats
    stacker_features: np.ndarray     # the stacker's features, pooled over repeats
    embedding: np.ndarray | None     # out-of-fold category probabilities, embedding model
    urgent_at: float
    cues_decide: bool
    confident_at: float
    cascade_below: float
    figures: dict
    urgency_cascade: dict | None = None  # the urgency's embedding look (see _urgency_cascade)


def _folds(categories: Sequence[str], seed: int = SEED):
    from sklearn.model_selection import StratifiedKFold

    # Stratify on the category; a class with fewer examples than folds is spread as it falls.
    counts = {c: categories.count(c) for c in set(categories)}
    strata = np.array([c if counts[c] >= FOLDS else "rare" for c in categories])
    return list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
                .split(np.zeros(len(strata)), strata))


def _matrices(texts: Sequence[str], folds) -> list:
    """Each fold's TF-IDF matrices, the vocabulary learned from its training part only."""
    matrices = []
    for train_index, test_index in folds:
        vectoriser = _vectoriser()
        train_matrix = vectoriser.fit_transform([texts[i] for i in train_index])
        matrices.append((train_matrix, vectoriser.transform([texts[i] for i in test_index])))
    return matrices


def urgency_threshold(probabilities: np.ndarray, forced: np.ndarray, urgent: np.ndarray,
                      recall: float = URGENT_RECALL) -> float:
    """The highest threshold t at which ``p >= t or forced`` still catches ``recall`` of
    the urgent examples.

    >>> urgency_threshold(np.array([.9, .6, .2]), np.array([False, False, False]),
    ...                   np.array([True, True, False]), 1.0)
    0.6
    """
    candidates = sorted(set(np.round(probabilities[urgent & ~forced], 6).tolist()), reverse=True)
    needed = recall * urgent.sum()
    for threshold in candidates:
        if (urgent & ((probabilities >= threshold) | forced)).sum() >= needed - 1e-9:
            return float(threshold)
    return float(min(candidates)) if candidates else 0.5


def confidence_threshold(probabilities: np.ndarray, right: np.ndarray,
                         precision: float = CONFIDENT_PRECISION) -> float:
    """The lowest top probability t such that the guesses at or above t are right at
    least ``precision`` of the time (1.0: none qualifies, everything is triaged).

    >>> confidence_threshold(np.array([.9, .8, .4, .3]), np.array([True, True, False, True]), .9)
    0.8
    """
    order = np.argsort(-probabilities)
    shares = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(shares >= precision)[0]
    return float(probabilities[order][ok.max()]) if len(ok) else 1.0


def cascade_bound(tfidf: np.ndarray, embedding: np.ndarray, truth: np.ndarray,
                  max_share: float = 0.4) -> tuple[float, dict]:
    """The top-probability bound under which the embedding model is consulted: the one
    with the best out-of-fold accuracy among bounds escalating at most ``max_share``
    of reports (ties: the cheaper one). Returns the bound and its figures."""
    top = tfidf.max(axis=1)
    averaged = (tfidf + embedding) / 2
    best = (float((tfidf.argmax(1) == truth).mean()), 0.0, 0.0)
    for bound in np.round(np.arange(0.2, 0.96, 0.05), 2):
        unsure = top < bound
        share = float(unsure.mean())
        if share > max_share:
            break
        guess = np.where(unsure, averaged.argmax(1), tfidf.argmax(1))
        accuracy = float((guess == truth).mean())
        if accuracy > best[0] + 1e-9:
            best = (accuracy, float(bound), share)
    return best[1], {"cascade_accuracy": round(best[0], 4),
                     "cascade_share": round(best[2], 4)}


def _rate(hits: np.ndarray, of: np.ndarray) -> float:
    return round(float((hits & of).sum() / max(of.sum(), 1)), 4)


def cross_validate(examples: Sequence[dict], embeddings: np.ndarray | None = None,
                   log: Callable[[str], None] = lambda _: None,
                   urgency_cascade: bool = False,
                   urgency_per_category: bool = False) -> CrossValidation:
    """Out-of-fold predictions and the hyper-parameters and thresholds chosen from them.

    ``urgency_per_category``: the urgency SVM weighs each term per category too
    (:func:`_per_category`), fitted on the known categories and scored with the
    category model's out-of-fold probabilities, as routing will score it."""
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    urgent = np.array([bool(e["urgent"]) for e in examples])
    classes = sorted(set(categories))
    truth = np.array([classes.index(c) for c in categories])
    folds = _folds(categories)
    matrices = _matrices(texts, folds)

    def out_of_fold(c: float) -> np.ndarray:
        result = np.zeros((len(texts), len(classes)))
        for (train_index, test_index), (train_m, test_m) in zip(folds, matrices, strict=True):
            model = _svm(c).fit(train_m, [categories[i] for i in train_index])
            result[test_index] = _scores(model, test_m, classes)
        return result

    best_c, best_scores, accuracies = None, None, {}
    for c in C_GRID:
        scores = out_of_fold(c)
        accuracies[c] = float((scores.argmax(1) == truth).mean())
        log(f"  C={c:g}: out-of-fold category accuracy {accuracies[c]:.3f}")
        if best_c is None or accuracies[c] > accuracies[best_c] + 1e-9:
            best_c, best_scores = c, scores
    scale = fit_temperature(best_scores, truth)
    probabilities = softmax(scale * best_scores)

    # Urgency: the threshold sits where the last few hard urgent reports fall, and which
    # fold a report lands in moves it (one 5-fold split put it anywhere between 0.15 and
    # 0.31). So the stacker's out-of-fold probabilities are pooled over REPEATS splits
    # with different shuffles, and the threshold is chosen on the pool.
    cues = np.array([hazard_flags(t) for t in texts])
    pooled_features, pooled_probability, pooled_splits = [], [], []
    for repeat in range(REPEATS):
        split = folds if repeat == 0 else _folds(categories, SEED + repeat)
        split_matrices = matrices if repeat == 0 else _matrices(texts, split)
        category_scores = best_scores if repeat == 0 else np.zeros_like(best_scores)
        urgency_scores = np.zeros(len(texts))
        for (train_index, test_index), (train_m, test_m) in zip(split, split_matrices,
                                                                  strict=True):
            if repeat:
                model = _svm(best_c).fit(train_m, [categories[i] for i in train_index])
                category_scores[test_index] = _scores(model, test_m, classes)
            if urgency_per_category:
                model = _fit_urgency(train_m, urgent[train_index], best_c,
                                     truth[train_index], len(classes))
                urgency_scores[test_index] = _urgency_scores(
                    model, test_m, softmax(scale * category_scores[test_index]))
            else:
                model = _fit_urgency(train_m, urgent[train_index], best_c, None)
                urgency_scores[test_index] = _urgency_scores(model, test_m, None)
        features = np.column_stack([urgency_scores, softmax(scale * category_scores),
                                    cues.astype(float)])
        urgent_probability = np.zeros(len(texts))
        for train_index, test_index in split:
            stacker = _logistic(1.0, balanced=True).fit(features[train_index],
                                                        urgent[train_index])
            urgent_probability[test_index] = stacker.predict_proba(features[test_index])[:, 1]
        pooled_features.append(features)
        pooled_probability.append(urgent_probability)
        pooled_splits.append(split)
    features = np.vstack(pooled_features)
    urgent_probability = np.concatenate(pooled_probability)
    pooled_urgent = np.tile(urgent, REPEATS)
    any_cue = np.tile(cues.any(axis=1), REPEATS)
    variants = {}
    for cues_decide in (False, True):
        forced = any_cue if cues_decide else np.zeros_like(any_cue)
        at = urgency_threshold(urgent_probability, forced, pooled_urgent)
        flagged = (urgent_probability >= at) | forced
        variants[cues_decide] = (_rate(flagged, ~pooled_urgent), at, flagged)
    cues_decide = variants[True][0] < variants[False][0]
    _, urgent_at, flagged = variants[cues_decide]

    embedding_oof, cascade_below, cascade_figures, second = None, 0.0, {}, None
    if embeddings is not None:
        # The category cascade whenever there are embeddings; urgency's look only if asked.
        if urgency_cascade:
            second = _urgency_cascade(embeddings, urgent, pooled_splits, features,
                                      urgent_probability, any_cue if cues_decide else None,
                                      log)
        embedding_oof = np.zeros_like(probabilities)
        for train_index, test_index in folds:
            model = _logistic(EMBEDDING_C).fit(embeddings[train_index],
                                               [categories[i] for i in train_index])
            aligned = np.zeros((len(test_index), len(classes)))
            for j, name in enumerate(model.classes_):
                aligned[:, classes.index(name)] = model.predict_proba(embeddings[test_index])[:, j]
            embedding_oof[test_index] = aligned
        cascade_below, cascade_figures = cascade_bound(probabilities, embedding_oof, truth)
        cascade_figures.update(second["figures"] if second else {})
        averaged = (probabilities + embedding_oof) / 2
        cascade_figures["embedding_accuracy"] = round(
            float((embedding_oof.argmax(1) == truth).mean()), 4)
        cascade_figures["always_both_accuracy"] = round(
            float((averaged.argmax(1) == truth).mean()), 4)
        final = np.where((probabilities.max(1) < cascade_below)[:, None], averaged,
                         probabilities)
    else:
        final = probabilities
    # Triage is decided on what routing will see: the cascade's probabilities.
    top = final.max(1)
    confident_at = confidence_threshold(top, final.argmax(1) == truth)

    figures = {
        "folds": FOLDS, "examples": len(texts), "C": best_c, "softmax_scale": round(scale, 3),
        "category_accuracy": round(accuracies[best_c], 4),
        "urgency_repeats": REPEATS,
        "urgency_per_category": bool(urgency_per_category),
        "urgent_recall": _rate(flagged, pooled_urgent),
        "false_urgent_rate": _rate(flagged, ~pooled_urgent),
        "cues_decide": bool(cues_decide),
        "urgent_recall_cues_only": _rate(any_cue, pooled_urgent),
        "false_urgent_rate_cues_only": _rate(any_cue, ~pooled_urgent),
        "triage_share": round(float((top < confident_at).mean()), 4),
        "confident_accuracy": round(float((final.argmax(1) == truth)[top >= confident_at].mean()),
                                    4),
        **cascade_figures,
    }
    return CrossValidation(classes, best_c, scale, probabilities, urgency_scores, cues,
                           urgent_probability, features, embedding_oof, urgent_at,
                           bool(cues_decide), confident_at, cascade_below, figures, second)


URGENCY_EMBEDDING_C = 10.0  # the embedding urgency model's regularisation
ESCALATE_FROM = (0.02, 0.05, 0.08, 0.1, 0.15, 0.2)  # first-stacker bounds tried out of fold
ESCALATE_BELOW = 0.9        # above it the first stacker's urgent is kept without a second look
MAX_ESCALATED = 0.4         # at most this share of reports pays for the encoder for urgency


def _embedding_urgency(embeddings: np.ndarray, urgent: np.ndarray):
    return _logistic(URGENCY_EMBEDDING_C, balanced=True).fit(embeddings, urgent)


def _urgency_cascade(embeddings: np.ndarray, urgent: np.ndarray, splits: list,
                     features: np.ndarray, first: np.ndarray, forced: np.ndarray | None,
                     log: Callable[[str], None]) -> dict:
    """The urgency decision's second look on sentence embeddings, chosen out of fold.

    For each pooled split: the embedding urgency model's out-of-fold score is added to the
    first stacker's features, and a second stacker is fitted out of fold on them. A report
    is escalated when its first-stacker probability is in [``from``, ESCALATE_BELOW); below,
    the model says not urgent; above, urgent. ``from`` is the bound (escalating at most
    MAX_ESCALATED of reports) whose second-stacker threshold at URGENT_RECALL gives the
    fewest false alarms out of fold; used only if that beats the first stacker alone.
    Returns what the cascade needs, its figures, and both decisions' out-of-fold
    trade-off curves (recall -> false-urgent rate).
    """
    n = len(urgent)
    second_features, second_probability = [], []
    for repeat, split in enumerate(splits):
        score = np.zeros(n)
        for train_index, test_index in split:
            model = _embedding_urgency(embeddings[train_index], urgent[train_index])
            score[test_index] = model.decision_function(embeddings[test_index])
        block = np.column_stack([features[repeat * n:(repeat + 1) * n], score])
        probability = np.zeros(n)
        for train_index, test_index in split:
            stacker = _logistic(1.0, balanced=True).fit(block[train_index], urgent[train_index])
            probability[test_index] = stacker.predict_proba(block[test_index])[:, 1]
        second_features.append(block)
        second_probability.append(probability)
    block, second = np.vstack(second_features), np.concatenate(second_probability)
    pooled = np.tile(urgent, len(splits))
    forced = forced if forced is not None else np.zeros_like(pooled)

    def decide(escalate_from: float) -> np.ndarray:
        escalated = (first >= escalate_from) & (first < ESCALATE_BELOW)
        return np.where(escalated, second, np.where(first >= ESCALATE_BELOW, 1.0, 0.0))

    def false_rate(probability: np.ndarray, recall: float) -> tuple[float, float, float]:
        at = urgency_threshold(probability, forced, pooled, recall)
        flagged = (probability >= at) | forced
        return at, _rate(flagged, pooled), _rate(flagged, ~pooled)

    first_at, _, first_false = false_rate(first, URGENT_RECALL)
    best = None
    for bound in ESCALATE_FROM:
        share = float(((first >= bound) & (first < ESCALATE_BELOW)).mean())
        if share > MAX_ESCALATED:
            continue
        at, recall, false = false_rate(decide(bound), URGENT_RECALL)
        log(f"  urgency cascade from {bound:g}: {share:.0%} escalated, recall {recall:.3f}, "
            f"false urgent {false:.3f} (first stacker alone {first_false:.3f})")
        if best is None or false < best[3] - 1e-9:
            best = (bound, share, at, false, recall)
    curves = {name: {f"{r:g}": list(false_rate(p, r)[1:]) for r in (0.97, 0.98, 0.985, 0.99)}
              for name, p in (("first", first), ("cascade", decide(best[0]) if best else first))}
    used = best is not None and best[3] < first_false - 1e-9
    figures = {"urgency_cascade": used, "urgency_curves": curves}
    if used:
        figures.update({"urgency_escalate_from": best[0], "urgency_escalated_share":
                        round(best[1], 4), "urgent_recall": best[4],
                        "false_urgent_rate": best[3]})
    return {"used": used, "features": block, "escalate_from": best[0] if best else 0.0,
            "urgent_at": best[2] if best else first_at, "figures": figures}


# ------------------------------------------------------------------------ training


def train_router(examples: Sequence[dict], embeddings: bool = False,
                 sources: Sequence[str] = (), log: Callable[[str], None] = lambda _: None,
                 now: datetime | None = None, urgency_cascade: bool = False,
                 urgency_per_category: bool = False) -> Router:
    """Cross-validate, then fit on every example: the :class:`Router` to save.

    ``urgency_cascade`` (needs ``embeddings``): also try the urgency decision's second
    look on the sentence embedding (:func:`_urgency_cascade`), kept only if it beats the
    first stacker out of fold. Off by default: on the frozen split it did worse
    (``docs/routing.md``, "The urgency cascade").
    ``urgency_per_category``: the urgency model weighs each term per category too
    (:func:`fit_text_models`, ``learned.urgency_score``).

    The stacker is fitted on the out-of-fold features (what it will see at run time:
    scores of a model that has not seen the report), the text models on everything.
    """
    now = now or datetime.now(UTC)
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    urgent = [bool(e["urgent"]) for e in examples]
    vectors = embed(texts) if embeddings else None
    log(f"cross-validating on {len(examples)} examples ({FOLDS} folds)")
    cv = cross_validate(examples, vectors, log, urgency_cascade, urgency_per_category)
    category_model, urgency_model = fit_text_models(texts, categories, urgent, cv.c, cv.scale,
                                                    urgency_per_category)
    if category_model.classes != cv.classes:
        raise ValueError("the category model's classes differ from cross-validation's")
    repeats = len(cv.stacker_features) // len(urgent)  # the features are pooled over repeats
    stacker_model = _logistic(1.0, balanced=True).fit(cv.stacker_features,
                                                      np.tile(np.asarray(urgent), repeats))
    stacker = UrgencyStacker(stacker_model.coef_[0].astype(np.float64),
                             float(stacker_model.intercept_[0]))
    stage = None
    if vectors is not None and (cv.cascade_below > 0 or
                                (cv.urgency_cascade and cv.urgency_cascade["used"])):
        stage = _fit_embedding(vectors, categories, category_model.classes)
    second = None
    if stage is not None and cv.urgency_cascade and cv.urgency_cascade["used"]:
        cascade = cv.urgency_cascade
        embedding_model = _embedding_urgency(vectors, np.asarray(urgent))
        second_model = _logistic(1.0, balanced=True).fit(
            cascade["features"], np.tile(np.asarray(urgent), repeats))
        second = UrgencyCascade(
            embedding_model.coef_[0].astype(np.float32), float(embedding_model.intercept_[0]),
            UrgencyStacker(second_model.coef_[0].astype(np.float64),
                           float(second_model.intercept_[0])),
            urgent_at=cascade["urgent_at"], escalate_from=cascade["escalate_from"],
            escalate_below=ESCALATE_BELOW)
    data_hash = corpus_hash(examples)
    version = f"{now:%Y%m%dT%H%M%SZ}-{data_hash[:8]}"
    manifest = {
        "trained_at": now.isoformat(timespec="seconds"),
        "training_data": {"sources": list(sources), "examples": len(examples),
                          "sha256_12": data_hash},
        "approach": ("tfidf+embeddings cascade" if stage else "tfidf")
        + (" (urgency too)" if second else ""),
        "cross_validation": cv.figures,
    }
    return Router(version=version, category=category_model, urgency=urgency_model,
                  stacker=stacker, urgent_at=cv.urgent_at, cues_decide=cv.cues_decide,
                  confident_at=cv.confident_at, embedding=stage,
                  cascade_below=cv.cascade_below if stage else 0.0, urgency_cascade=second,
                  manifest=manifest)
