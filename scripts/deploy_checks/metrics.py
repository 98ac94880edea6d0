"""The metric catalog (src/metrics.json, the one list of metric families the service, its tests,
the dashboard, the alerts and the autoscaler read) and Prometheus text expositions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .framework import fail

CATALOG_PATH = "src/metrics.json"
TYPES = ("counter", "gauge", "histogram")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels Prometheus adds to every scraped series (static, compose DNS discovery, operator).
TARGET_LABELS = frozenset(
    {"instance", "job", "service", "namespace", "pod", "container", "endpoint"}
)
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]
    help: str

    def series(self) -> dict[str, frozenset[str]]:
        """The sample names Prometheus stores for this family, with the labels each carries."""
        if self.type == "histogram":
            return {
                self.name + "_bucket": self.labels | {"le"},
                self.name + "_sum": self.labels,
                self.name + "_count": self.labels,
            }
        return {self.name: self.labels}


@dataclass(frozen=True)
class Catalog:
    families: dict[str, Family]

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Reads and validates the catalog; fails the check on any malformed entry."""
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            fail(f"{path}: {e}")
        if not isinstance(entries, list) or not entries:
            fail(f"{path}: not a non-empty JSON array")
        families: dict[str, Family] = {}
        for i, e in enumerate(entries):
            where = f"{path.name}[{i}]"
            if not isinstance(e, dict) or set(e) != {"name", "type", "labels", "help"}:
                fail(f"{where}: want exactly the keys name, type, labels, help: {e!r}")
            name, kind, labels, help_ = e["name"], e["type"], e["labels"], e["help"]
            if not isinstance(name, str) or not _NAME.match(name):
                fail(f"{where}: invalid metric name {name!r}")
            if name in families:
                fail(f"{where}: {name} listed twice")
            if kind not in TYPES:
                fail(f"{where}: {name} has type {kind!r}, not one of {', '.join(TYPES)}")
            if kind == "counter" and not name.endswith("_total"):
                fail(f"{where}: counter {name} does not end in _total")
            if not isinstance(labels, list) or not all(
                isinstance(x, str) and _LABEL.match(x) and not x.startswith("__") for x in labels
            ):
                fail(f"{where}: {name} labels {labels!r} are not valid label names")
            if len(set(labels)) != len(labels) or set(labels) & (TARGET_LABELS | {"le"}):
                fail(f"{where}: {name} labels {labels} repeat or clash with le / target labels")
            if not isinstance(help_, str) or not help_.strip():
                fail(f"{where}: {name} has no help text")
            families[name] = Family(name, kind, frozenset(labels), help_)
        return cls(families)

    def series(self) -> dict[str, frozenset[str]]:
        """Every sample name of every family, with its label names."""
        out: dict[str, frozenset[str]] = {}
        for f in self.families.values():
            out.update(f.series())
        return out

    def check_expr(self, where: str, names: set[str], labels: set[str]) -> None:
        """Fails unless every metric an expression names is a catalog series (or one Prometheus
        makes) and every label it uses is on one of those series or added by the scrape."""
        series = self.series()
        unknown = names - set(series) - PROMETHEUS_SERIES
        if unknown:
            fail(f"{where}: names metrics that are not in {CATALOG_PATH}: {sorted(unknown)}")
        if names & PROMETHEUS_SERIES:
            return  # `up` and friends carry only the target labels; nothing more to compare
        have = set(TARGET_LABELS).union(*(series[n] for n in names))
        missing = labels - have
        if missing:
            fail(f"{where}: labels {sorted(missing)} are on none of {sorted(names)}")


@dataclass
class Exposition:
    """What one scrape of /metrics holds: TYPE and HELP per family, label names per sample."""

    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        out = cls()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                parts = line.split(maxsplit=3)
                if len(parts) == 4:
                    out.types[parts[2]] = parts[3].strip()
            elif line.startswith("# HELP "):
                parts = line.split(maxsplit=3)
                if len(parts) >= 3:
                    text_ = parts[3] if len(parts) == 4 else ""
                    out.helps[parts[2]] = text_.replace("\\n", "\n").replace("\\\\", "\\")
            elif line and not line.startswith("#"):
                name = re.split(r"[{\s]", line, maxsplit=1)[0]
                labels = re.match(r"[^{\s]+\{(.*)\}", line)
                found = set(re.findall(r'(\w+)="', labels.group(1))) if labels else set()
                out.samples.setdefault(name, set()).update(found)
        return out


# Families labelled per API key have series only once a key has queued work, so a service
# without keys (or before any keyed request) cannot export them.
KEYED_LABEL = "key"


def compare(catalog: Catalog, exposition: Exposition, prefix: str = "aft_") -> list[str]:
    """Differences between the catalog and what a service exports: families missing or with
    another type, help or label set, and `prefix` families the catalog does not list. A family
    with a `key` label may be absent; when exported it is checked like any other."""
    problems = []
    for f in catalog.families.values():
        if f.name not in exposition.types:
            if KEYED_LABEL not in f.labels:
                problems.append(f"{f.name}: not exported")
            continue
        if exposition.types[f.name] != f.type:
            problems.append(f"{f.name}: exported as {exposition.types[f.name]}, not {f.type}")
        if exposition.helps.get(f.name) != f.help:
            problems.append(f"{f.name}: help {exposition.helps.get(f.name)!r}, not {f.help!r}")
        for sample, labels in f.series().items():
            seen = exposition.samples.get(sample)
            if seen is None:
                problems.append(f"{f.name}: no {sample} samples")
            elif seen != labels:
                problems.append(f"{sample}: labels {sorted(seen)}, not {sorted(labels)}")
    extra = {n for n in exposition.types if n.startswith(prefix)} - set(catalog.families)
    problems += [f"{n}: exported but not in {CATALOG_PATH}" for n in sorted(extra)]
    return problems
