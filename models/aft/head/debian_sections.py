"""The worked example's data: Debian package descriptions labelled with their archive section.

    python -m aft.head.debian_sections --out debian-sections.csv

Reads apt's package lists on this machine (no network): sections and short descriptions from the
`*_Packages` indexes, long descriptions from the `*_i18n_Translation-en` ones (`apt-get update -o
Acquire::Languages=en` fetches those), joined on Description-md5. Writes a CSV with the columns
text, label (the section), package and source (the source package, for `--group-column source`
so binaries built from one source never straddle the train/test split).

Per section it takes up to --per-section packages, at most --per-source from any one source, in
a seeded random order of sources, so big sources (hundreds of near-identical binaries) do not
dominate. Transitional and dummy packages are skipped: their text says what they replace, not
what they are.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

APT_LISTS = Path("/var/lib/apt/lists")
APT_HELPER = Path("/usr/lib/apt/apt-helper")
# Sections named for what a package does (not its language ecosystem, where the package name
# gives the answer away), with well over 100 source packages each in Debian 12.
DEFAULT_SECTIONS = (
    "admin", "database", "devel", "editors", "fonts", "games", "graphics", "libs", "mail",
    "math", "net", "science", "sound", "text", "utils", "video", "web", "x11",
)  # fmt: skip
_SKIP = re.compile(r"\b(transitional|dummy)\b[^.]*\bpackage\b", re.I)


class ListsError(Exception):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    source: str
    section: str
    text: str


def read_index(path: Path) -> str:
    """An apt list file as text, whatever its compression (apt-helper knows them all)."""
    if path.suffix in ("", ".txt"):
        return path.read_text(encoding="utf-8", errors="replace")
    helper = APT_HELPER if APT_HELPER.exists() else shutil.which("apt-helper")
    if not helper:
        raise ListsError(f"{path}: compressed, and apt-helper (to read it) is not installed")
    done = subprocess.run([str(helper), "cat-file", str(path)], capture_output=True)
    if done.returncode != 0:
        raise ListsError(f"{path}: apt-helper cat-file failed: {done.stderr.decode().strip()}")
    return done.stdout.decode("utf-8", "replace")


def stanzas(text: str):
    """deb822 paragraphs as {field: value}; continuation lines kept with their newlines."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.split("\n"):
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def clean_description(desc: str) -> str:
    """Short description + long paragraphs as one line (deb822's ' .' blank lines dropped)."""
    short, _, long = desc.partition("\n")
    lines = [ln.strip() for ln in long.split("\n")]
    body = " ".join(ln for ln in lines if ln and ln != ".")
    text = short.strip().rstrip(".")
    return re.sub(r"\s+", " ", f"{text}. {body}" if body else text).strip()


def load_packages(lists: Path) -> list[Package]:
    packages = sorted(lists.glob("*_Packages*"))
    translations = sorted(lists.glob("*_i18n_Translation-en*"))
    if not packages:
        raise ListsError(f"no *_Packages index in {lists}: run `apt-get update`")
    if not translations:
        raise ListsError(
            f"no *_i18n_Translation-en index in {lists} (long descriptions): run "
            f"`apt-get update -o Acquire::Languages=en`"
        )
    long_by_md5: dict[str, str] = {}
    for f in translations:
        for st in stanzas(read_index(f)):
            if "Description-md5" in st and "Description-en" in st:
                long_by_md5[st["Description-md5"]] = st["Description-en"]
    out: dict[str, Package] = {}
    for f in packages:
        for st in stanzas(read_index(f)):
            name, section = st.get("Package"), st.get("Section")
            if not name or not section or name in out:
                continue
            desc = long_by_md5.get(st.get("Description-md5", ""), st.get("Description", ""))
            if not desc or _SKIP.search(desc):
                continue
            source = st.get("Source", name).split(" ")[0]  # "foo (1.2-3)" -> "foo"
            # "contrib/net" -> "net": the component is not part of the topic.
            out[name] = Package(name, source, section.rsplit("/", 1)[-1], clean_description(desc))
    return list(out.values())


def sample(
    packages: list[Package], sections: list[str], per_section: int, per_source: int, seed: int
) -> list[Package]:
    rng = random.Random(seed)
    by_section: dict[str, dict[str, list[Package]]] = defaultdict(lambda: defaultdict(list))
    for p in packages:
        by_section[p.section][p.source].append(p)
    chosen: list[Package] = []
    seen_text: set[str] = set()
    for section in sections:
        sources = sorted(by_section[section])
        rng.shuffle(sources)
        taken = 0
        for src in sources:
            pkgs = sorted(by_section[section][src], key=lambda p: p.name)
            rng.shuffle(pkgs)
            k = 0
            for p in pkgs:
                if k >= per_source or taken >= per_section:
                    break
                if p.text.lower() in seen_text:
                    continue
                seen_text.add(p.text.lower())
                chosen.append(p)
                k += 1
                taken += 1
            if taken >= per_section:
                break
    return chosen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m aft.head.debian_sections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="CSV to write")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS), help="comma-separated")
    ap.add_argument("--per-section", type=int, default=300, help="packages per section, at most")
    ap.add_argument("--per-source", type=int, default=2, help="packages per source, at most")
    ap.add_argument("--min-per-section", type=int, default=100, help="drop smaller sections")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lists", type=Path, default=APT_LISTS, help="apt's lists directory")
    a = ap.parse_args(argv)
    if a.per_section < 1 or a.per_source < 1:
        ap.error("--per-section and --per-source must be at least 1")
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    try:
        packages = load_packages(a.lists)
    except (ListsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = sample(packages, sections, a.per_section, a.per_source, a.seed)
    counts = Counter(p.section for p in rows)
    need = min(a.min_per_section, a.per_section)  # a section that filled its quota is kept
    kept = [s for s in sections if counts[s] >= need]
    for s in sections:
        if s not in kept:
            print(
                f"note: section {s!r} has {counts[s]} usable packages, fewer than {need} "
                f"(--min-per-section); dropped",
                file=sys.stderr,
            )
    rows = [p for p in rows if p.section in kept]
    if len(kept) < 2:
        print("error: fewer than two sections left; check --sections", file=sys.stderr)
        return 1
    try:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label", "package", "source"])
            for p in rows:
                w.writerow([p.text, p.section, p.name, p.source])
    except OSError as e:
        print(f"error: writing {a.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    sources = len({p.source for p in rows})
    print(
        f"wrote {a.out}: {len(rows)} packages from {sources} source packages, {len(kept)} "
        f"sections ({', '.join(f'{s} {counts[s]}' for s in kept)}) out of {len(packages)} "
        f"described packages"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
