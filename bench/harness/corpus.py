"""The fixed corpus (bench/corpus/texts.jsonl), oha's request-body files, and its make-up as
measured with the bundle's tokenizer (the report quotes these, never fixed numbers)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from aft.bundle import load_tokenizer

from harness import CORPUS


@cache
def rows() -> tuple[dict, ...]:
    """The corpus rows: {"text", "bucket"} (short, medium or long)."""
    lines = CORPUS.read_text().splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def texts(n: int) -> list[str]:
    return [r["text"] for r in rows()[:n]]


def request_body(texts: str | list[str], openai_model: str | None = None) -> dict:
    """aft-serve's /v1/embed body, or with `openai_model` an OpenAI-style /embeddings body
    (infinity's) asking that model for the same texts."""
    if openai_model is None:
        return {"inputs": texts}
    return {"model": openai_model, "input": [texts] if isinstance(texts, str) else texts}


def body_files(results_dir: Path, openai_model: str | None = None) -> dict[str, Path]:
    """Request-body files for oha -Z (one JSON body per line; oha picks one at random per
    request): `mixed` = every corpus text once, `short` = the short texts only. With
    `openai_model`, OpenAI-style bodies of the same texts (request_body), in `openai-*.jsonl`."""
    out = results_dir / "bodies"
    out.mkdir(parents=True, exist_ok=True)
    selections = {"mixed": rows(), "short": [r for r in rows() if r["bucket"] == "short"]}
    prefix = "openai-" if openai_model else ""
    paths = {}
    for name, sel in selections.items():
        path = out / f"{prefix}{name}.jsonl"
        lines = (json.dumps(request_body(r["text"], openai_model)) + "\n" for r in sel)
        path.write_text("".join(lines))
        paths[name] = path
    return paths


def facts(model_dir: Path) -> dict:
    """Texts and tokens (special tokens included, truncated as the service does) per bucket."""
    tok = load_tokenizer(model_dir)
    lengths = [len(e.ids) for e in tok.encode_batch([r["text"] for r in rows()])]
    buckets: dict[str, list[int]] = {}
    for r, n in zip(rows(), lengths, strict=True):
        buckets.setdefault(r["bucket"], []).append(n)
    return {
        "file": str(CORPUS.relative_to(CORPUS.parents[2])),
        "texts": len(lengths),
        "mean_tokens": sum(lengths) / len(lengths),
        "buckets": {
            name: {
                "texts": len(ns),
                "share": len(ns) / len(lengths),
                "min_tokens": min(ns),
                "max_tokens": max(ns),
                "mean_tokens": sum(ns) / len(ns),
            }
            for name, ns in sorted(buckets.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        },
    }
