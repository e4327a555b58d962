"""The routing classifier, loaded once per container and replaceable while routing runs.

``WHISTLE_ROUTING_MODEL`` names a model artefact; empty means the bundled one if
shipped, else the keyword rules (see ``classifier.load_classifier``). A model that
was asked for and cannot be loaded stops the service before it consumes anything.
:meth:`RoutingModel.reload` reads the configured artefact again (after a retrain)
and swaps one reference, like the rules: workers already running keep the model
they were given, nothing about consumption is touched, so no message is dropped.

Start-up is fast: the learned model's TF-IDF part loads in a few hundredths of a
second and serves at once; its sentence encoder (about a second of CPU, most of the
load) is loaded in a real OS thread, so the eventlet hub keeps consuming meanwhile,
and the cascade joins when it is there. A reload loads everything in that thread
before it swaps, so the model in force is always whole.

Usage, in a service::

    class RoutingService:
        model = RoutingModel()   # self.model.classifier: a learned Classifier, or None
                                 # (then the keyword rules classify); self.model.threshold
"""

from __future__ import annotations

from logging import getLogger

import eventlet
from eventlet import tpool
from nameko.extensions import DependencyProvider

from services.routing.classifier import Classifier, load_classifier
from shared import config as cfg

_log = getLogger(__name__)


class RoutingModel(DependencyProvider):
    def setup(self):
        self.path = cfg.get(self.container.config, cfg.ROUTING_MODEL) or None
        self.threshold = cfg.triage_threshold(self.container.config)
        self.classifier: Classifier | None = load_classifier(self.path, background=off_the_hub)
        _log.info("routing classifier: %s", self.version)

    @property
    def version(self) -> str:
        return self.classifier.model_version if self.classifier is not None else "keywords"

    def reload(self) -> str:
        """Load the configured artefact again; the old model stays on failure (raises)."""
        # In a real thread: loading is a second of CPU the hub would otherwise stall on.
        self.classifier = tpool.execute(load_classifier, self.path)
        return self.version

    def get_dependency(self, worker_ctx) -> RoutingModel:
        # The provider itself: ``classifier`` is read once per use, so a reload
        # reaches the next report, and ``threshold`` comes with it.
        return self


def off_the_hub(work) -> None:
    """Run ``work`` in one of eventlet's real OS threads, not on the hub: pure-Python
    CPU work there (the encoder's tokenizer tables) would stop every green thread."""
    eventlet.spawn_n(tpool.execute, work)
