"""The routing classifier, loaded once per container and replaceable while routing runs.

``WHISTLE_ROUTING_MODEL`` names a model artefact; empty means the bundled one if
shipped, else the keyword rules (see ``classifier.load_classifier``). A model that
was asked for and cannot be loaded stops the service before it consumes anything.
:meth:`RoutingModel.reload` reads the configured artefact again (after a retrain)
and swaps one reference, like the rules: workers already running keep the model
they were given, nothing about consumption is touched, so no message is dropped.

Usage, in a service::

    class RoutingService:
        model = RoutingModel()   # self.model.classifier: a learned Classifier, or None
                                 # (then the keyword rules classify); self.model.threshold
"""

from __future__ import annotations

from logging import getLogger

from nameko.extensions import DependencyProvider

from services.routing.classifier import Classifier, load_classifier
from shared import config as cfg

_log = getLogger(__name__)


class RoutingModel(DependencyProvider):
    def setup(self):
        self.path = cfg.get(self.container.config, cfg.ROUTING_MODEL) or None
        self.threshold = cfg.triage_threshold(self.container.config)
        self.classifier: Classifier | None = load_classifier(self.path)
        _log.info("routing classifier: %s", self.version)

    @property
    def version(self) -> str:
        return self.classifier.model_version if self.classifier is not None else "keywords"

    def reload(self) -> str:
        """Load the configured artefact again; the old model stays on failure (raises)."""
        self.classifier = load_classifier(self.path)
        return self.version

    def get_dependency(self, worker_ctx) -> RoutingModel:
        # The provider itself: ``classifier`` is read once per use, so a reload
        # reaches the next report, and ``threshold`` comes with it.
        return self
