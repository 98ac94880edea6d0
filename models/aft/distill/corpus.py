"""Build the offline distillation corpus from Debian packages, split into train / held-out.

Sources (aft.distill.sources; docs/CORPUS.md lists each with its package, version, licence):
WordNet, Debian package descriptions, GCIDE (Webster's 1913), FOLDOC, the Jargon File, man
pages, Perl's manuals, the Linux kernel documentation, Debian's manuals, the PostgreSQL manual,
the GIMP and GNOME user help, Freeciv and Dungeon Crawl texts. Python's documentation and
docstrings and fortune-cookie files are reserved test domains and never read (sources/reserved.py).

Each text is a cleaned sentence or run of sentences (4-64 words, at most 600 characters;
WordNet glosses and short descriptions kept whole), deduplicated on a normalized key (case,
punctuation and spacing ignored), tagged with its source, document and kind. The split is by
document: a stable hash of the document id puts all of a document's texts on one side.

Run (from models/):
    python -m aft.distill.corpus fetch    # apt-get download + unpack into ../.work/corpus-debs
    python -m aft.distill.corpus build    # -> ../.work/corpus/{train,heldout}.jsonl.gz
    python -m aft.distill.corpus build --fetch --sources wordnet,debian-descriptions
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from aft.distill.sources import BY_NAME, SOURCES, Source, all_packages
from aft.distill.sources.lexical import (
    LEXNAMES,
    SNAPSHOT,
    apt_translation_files,
    debian_release,
    snapshot_descriptions,
)
from aft.distill.sources.packages import MissingInputs, fetch, fetched, licence, require
from aft.distill.textclean import (
    MAX_CHARS,
    MAX_WORDS,
    MIN_WORDS,
    chunks,
    dedup_key,
    is_prose,
    squash,
    stable_fraction,
)

__all__ = ["LEXNAMES", "build", "is_heldout", "load"]

REPO = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO / ".work" / "corpus"
DEFAULT_DEBS = REPO / ".work" / "corpus-debs"
HELDOUT_FRACTION = 0.1
FETCH_CMD = "python -m aft.distill.corpus fetch  (from models/)"


def is_heldout(doc: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Deterministic split: a stable hash of the document id decides, independent of file
    order, machine and run (the same hash as the earlier corpus, whose WordNet synset and
    Debian package-family ids are kept, so their split is unchanged)."""
    return stable_fraction(doc) < fraction


def _h(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


class Dedup:
    """Seen-before check on 64-bit hashes of the exact text and of its normalized key."""

    def __init__(self) -> None:
        self.exact: set[bytes] = set()
        self.normal: set[bytes] = set()

    def check(self, text: str) -> str | None:
        """None for a new text (and remembers it), else "exact" or "normalized"."""
        e = _h(text)
        if e in self.exact:
            return "exact"
        n = _h(dedup_key(text))
        if n in self.normal:
            return "normalized"
        self.exact.add(e)
        self.normal.add(n)
        return None


def texts_of(rec: dict, max_words: int) -> tuple[list[str], Counter]:
    """The corpus texts a paragraph record gives, and why any of it was dropped."""
    why: Counter = Counter()
    text = squash(rec["text"])
    if rec.get("atomic"):
        # Glosses and short descriptions are kept whole, as the earlier corpus kept them.
        if len(text) < 3:
            why["too_short"] += 1
            return [], why
        if len(text.split()) > max_words or len(text) > MAX_CHARS:
            why["too_long"] += 1
            return [], why
        return [text], why
    out = []
    for t in chunks(text, f"{rec['doc']}#{text[:64]}", max_words):
        if len(t.split()) < MIN_WORDS:
            why["too_short"] += 1
        elif len(t) > MAX_CHARS:
            why["too_long"] += 1
        elif not is_prose(t):
            why["not_prose"] += 1
        else:
            out.append(t)
    return out, why


def build(
    out: Path,
    debs: Path,
    sources: list[Source],
    max_words: int = MAX_WORDS,
    fraction: float = HELDOUT_FRACTION,
) -> dict:
    """Write out/{train,heldout}.jsonl.gz and out/summary.json; return the summary."""
    require(debs, all_packages(sources), FETCH_CMD)
    if any(s.name == "debian-descriptions" for s in sources) and not apt_translation_files(
        debs / SNAPSHOT
    ):
        raise MissingInputs(f"Debian descriptions not snapshotted yet: run {FETCH_CMD}")
    root = debs / "root"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("train.jsonl", "heldout.jsonl"):  # the earlier format would shadow the new
        (out / stale).unlink(missing_ok=True)
    t0 = time.time()
    dedup = Dedup()
    files = {s: gzip.open(out / f"{s}.jsonl.gz.tmp", "wt", compresslevel=6) for s in SPLITS}
    per_source: dict[str, dict] = {}
    try:
        for src in sources:
            stats: Counter = Counter()
            docs: dict[str, set[str]] = defaultdict(set)
            kinds: Counter = Counter()
            for rec in src.records(root):
                stats["paragraphs"] += 1
                texts, why = texts_of(rec, max_words)
                stats.update(why)
                split = "heldout" if is_heldout(rec["doc"], fraction) else "train"
                for t in texts:
                    dup = dedup.check(t)
                    if dup:
                        stats[f"duplicate_{dup}"] += 1
                        continue
                    row = {"text": t, "source": src.name, "doc": rec["doc"], "kind": rec["kind"]}
                    if "lexname" in rec:
                        row["lexname"] = rec["lexname"]
                    files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
                    stats[split] += 1
                    stats["words"] += len(t.split())
                    docs[split].add(rec["doc"])
                    kinds[rec["kind"]] += 1
            stats["docs_train"], stats["docs_heldout"] = len(docs["train"]), len(docs["heldout"])
            straddle = docs["train"] & docs["heldout"]
            if straddle:  # impossible by construction; checked because the split relies on it
                raise AssertionError(f"{src.name}: documents in both splits: {list(straddle)[:3]}")
            per_source[src.name] = dict(stats) | {"kinds": dict(kinds), "about": src.about}
            total = stats["train"] + stats["heldout"]
            print(
                f"{src.name}: {total} texts ({stats['heldout']} held-out) from "
                f"{stats['docs_train'] + stats['docs_heldout']} documents, "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
    finally:
        for fh in files.values():
            fh.close()
    for s in SPLITS:
        os.replace(out / f"{s}.jsonl.gz.tmp", out / f"{s}.jsonl.gz")
    summary = {
        "sources": per_source,
        "totals": {s: sum(v.get(s, 0) for v in per_source.values()) for s in SPLITS},
        "packages": package_table(debs, sources),
        "settings": {
            "max_words": max_words,
            "min_words": MIN_WORDS,
            "max_chars": MAX_CHARS,
            "heldout_fraction": fraction,
        },
        "build_seconds": round(time.time() - t0),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


SPLITS = ("train", "heldout")


def package_table(debs: Path, sources: list[Source]) -> list[dict]:
    """Per source and package: version and licence (from the package's copyright file)."""
    have = fetched(debs)
    rows = []
    for src in sources:
        if src.name == "debian-descriptions":
            rows.append(
                dict(
                    source=src.name,
                    package="(apt index Translation-en)",
                    version=debian_release(debs / SNAPSHOT),
                    licence="each package's own licence (DFSG-free, Debian main)",
                )
            )
        for pkg in src.packages:
            version = have.get(pkg, {}).get("version", "not fetched")
            rows.append(
                dict(
                    source=src.name,
                    package=pkg,
                    version=version,
                    licence=licence(debs / "root", pkg),
                )
            )
    return rows


def load(path: Path) -> list[dict]:
    """The records of a split file; `x.jsonl` also finds the compressed `x.jsonl.gz`."""
    path = Path(path)
    if not path.exists() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def markdown(summary: dict) -> str:
    """The per-source count and licence tables, as docs/CORPUS.md shows them."""
    lines = [
        "| source | what | documents | train texts | held-out texts | words / text | dropped "
        "as duplicates |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summary["sources"].items():
        n = s.get("train", 0) + s.get("heldout", 0)
        dups = s.get("duplicate_exact", 0) + s.get("duplicate_normalized", 0)
        lines.append(
            f"| {name} | {s.get('about', '')} | {s['docs_train'] + s['docs_heldout']:,} | "
            f"{s.get('train', 0):,} | "
            f"{s.get('heldout', 0):,} | {s.get('words', 0) / max(n, 1):.1f} | {dups:,} |"
        )
    t = summary["totals"]
    lines.append(f"| **total** | | | **{t['train']:,}** | **{t['heldout']:,}** | | |")
    lines += ["", "| source | package | version | licence (copyright file) |"]
    lines.append("| --- | --- | --- | --- |")
    for r in summary["packages"]:
        lic = _short_licence(r["licence"])
        lines.append(f"| {r['source']} | `{r['package']}` | {r['version']} | {lic} |")
    return "\n".join(lines)


def _short_licence(text: str, keep: int = 3) -> str:
    """The main licence and the first few others (summary.json keeps the whole list)."""
    m = re.match(r"(.*) \(other files: (.*)\)$", text)
    if not m:
        return text
    others = m.group(2).split("; ")
    more = f"; +{len(others) - keep} more" if len(others) > keep else ""
    return f"{m.group(1)} (other files: {'; '.join(others[:keep])}{more})"


def _select(names: str) -> list[Source]:
    if not names:
        return list(SOURCES)
    unknown = [n for n in names.split(",") if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown sources {unknown}; known: {', '.join(BY_NAME)}")
    wanted = set(names.split(","))
    return [s for s in SOURCES if s.name in wanted]  # priority order, whatever the given order


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="build", choices=["build", "fetch", "report"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder")
    ap.add_argument("--debs", type=Path, default=DEFAULT_DEBS, help="fetched packages folder")
    ap.add_argument("--sources", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--fetch", action="store_true", help="build: fetch missing packages first")
    ap.add_argument("--max-words", type=int, default=MAX_WORDS)
    ap.add_argument("--heldout-fraction", type=float, default=HELDOUT_FRACTION)
    args = ap.parse_args(argv)
    sources = _select(args.sources)
    if args.command == "report":
        summary = json.loads((args.out / "summary.json").read_text())
        built = [s for s in SOURCES if s.name in summary["sources"]]
        summary["packages"] = package_table(args.debs, built)  # licences as parsed now
        for src in built:
            summary["sources"][src.name]["about"] = src.about
        print(markdown(summary))
        return
    packages = all_packages(sources)
    if args.command == "fetch" or args.fetch:
        missing = [p for p in packages if p not in fetched(args.debs)]
        if missing:
            fetch(args.debs, missing)
        if "debian-descriptions" in {s.name for s in sources} and not apt_translation_files(
            args.debs / SNAPSHOT
        ):
            snapshot_descriptions(args.debs)
        if args.command == "fetch":
            return
    try:
        summary = build(args.out, args.debs, sources, args.max_words, args.heldout_fraction)
    except MissingInputs as e:
        print(f"aft.distill.corpus: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary["totals"]), f"{summary['build_seconds']}s")


if __name__ == "__main__":
    main()
