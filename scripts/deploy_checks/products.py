"""What checks hand to each other. Each key names its type; framework.Context enforces that a
check reads only what it declares in `needs` and writes only what it declares in `provides`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .framework import Key
from .metrics import Catalog, Exposition
from .promserver import LivePrometheus


@dataclass(frozen=True)
class ServiceRecipe:
    """How to start aft-serve as the image would: the binary (staged image layout), the
    bundle, and the arguments and environment that made it start, serve and stop cleanly."""

    binary: Path
    bundle: Path
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


CATALOG: Key[Catalog] = Key("metric catalog (src/metrics.json)")
RULE_FILES: Key[list[Path]] = Key("alert rule files")
RENDERED: Key[dict[str, list[dict[str, Any]]]] = Key("rendered k8s manifests")
STAGED_BINARY: Key[Path] = Key("staged image layout")
SERVICE: Key[ServiceRecipe] = Key("a service that starts and stops cleanly")
EXPOSITION: Key[Exposition] = Key("an aft-serve /metrics")
LIVE_PROMETHEUS: Key[LivePrometheus] = Key("a Prometheus scraping a live aft-serve")
