"""Build the offline distillation corpus from registry packages, split into train / held-out.

Sources (no network beyond the Debian archive that apt already uses):
- WordNet 3.0 (Debian `wordnet-base`): each synset's gloss (definition) and its example
  sentences, with the synset's lexicographer category (noun.animal, verb.motion, ...).
- Debian package descriptions (apt's `Translation-en` index, fetched by `apt-get update -o
  Acquire::Languages=en`): short descriptions and the paragraphs of long ones; multi-sentence
  technical prose that is closer to document-length text than glosses are.

Texts are deduplicated (case- and space-insensitive). The split is by group, never by text, so
that held-out text shares no synset (WordNet) or package family (Debian) with training text.
Run:  python -m aft.distill.corpus --out ../.work/corpus
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
APT_LISTS = Path("/var/lib/apt/lists")
HELDOUT_FRACTION = 0.1

# lexnames(5WN): index = lex_filenum field of a data.* line.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]  # fmt: skip


def is_heldout(group: str) -> bool:
    """Deterministic split: a stable hash of the group decides, independent of file order."""
    h = int.from_bytes(hashlib.sha1(group.encode()).digest()[:8], "big")
    return (h % 10_000) < HELDOUT_FRACTION * 10_000


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def wordnet_records() -> list[dict]:
    """One record per definition / example, grouped by synset ("n:00001740")."""
    if not (WORDNET_DIR / "data.noun").exists():
        raise SystemExit("WordNet missing: run `apt-get update && apt-get install -y wordnet-base`")
    recs = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET_DIR / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            group = f"{fields[2]}:{fields[0]}"
            lexname = LEXNAMES[int(fields[1])]
            # The gloss is "definition; "example one"; "example two"" (examples are quoted).
            examples = [_clean(e) for e in re.findall(r'"([^"]+)"', gloss)]
            definition = _clean(gloss.split('"', 1)[0]).rstrip(";").strip()
            if definition:
                recs.append(dict(text=definition, kind="definition", group=group, lexname=lexname))
            for e in examples:
                if len(e.split()) >= 3:
                    recs.append(dict(text=e, kind="example", group=group, lexname=lexname))
    return recs


def debian_records() -> list[dict]:
    """Short descriptions and long-description paragraphs, grouped by package family."""
    files = sorted(APT_LISTS.glob("*_i18n_Translation-en*"))
    if not files:
        raise SystemExit(
            "Debian descriptions missing: run `apt-get update -o Acquire::Languages=en`"
        )
    recs = []
    for f in files:
        raw = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(f)], capture_output=True, check=True
        ).stdout.decode("utf-8", "replace")
        for stanza in raw.split("\n\n"):
            m = re.search(r"^Package: (\S+)$", stanza, re.M)
            d = re.search(r"^Description-en: (.*?)(?=^\S|\Z)", stanza, re.M | re.S)
            if not (m and d):
                continue
            family = "deb:" + m.group(1).split("-")[0]
            short, _, long = d.group(1).partition("\n")
            recs.append(dict(text=_clean(short), kind="debian-short", group=family, lexname=None))
            for para in re.split(r"^ \.\s*$", long, flags=re.M):
                # Skip bullet lists and code-ish paragraphs: keep prose of 8-150 words.
                para = _clean(para)
                if 8 <= len(para.split()) <= 150 and not para.startswith(("*", "-", "+")):
                    recs.append(dict(text=para, kind="debian-long", group=family, lexname=None))
    return recs


def build(out: Path) -> dict[str, int]:
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"train": [], "heldout": []}
    for rec in wordnet_records() + debian_records():
        key = rec["text"].lower()
        if len(rec["text"]) < 3 or key in seen:
            continue
        seen.add(key)
        splits["heldout" if is_heldout(rec["group"]) else "train"].append(rec)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, recs in splits.items():
        with open(out / f"{name}.jsonl", "w") as fh:
            for r in recs:
                fh.write(json.dumps(r) + "\n")
        counts[name] = len(recs)
    return counts


def load(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("../.work/corpus"))
    args = ap.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
