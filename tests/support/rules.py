"""Rules files for tests: the shipped rules with deadlines short enough to miss."""

from pathlib import Path

import yaml

from services.routing.rules import SHIPPED_RULES


def fast_rules(directory: Path, acknowledge: str = "1s", resolve: str = "30s") -> Path:
    """The shipped rules, with every priority's windows replaced (seconds, not days)."""
    data = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    for window in data["priorities"].values():
        window.update(acknowledge=acknowledge, resolve=resolve)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
