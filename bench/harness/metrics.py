"""aft-serve's /metrics (the peers expose the batch and input counters under the same names):
one scrape, and the figures between two scrapes."""

from __future__ import annotations

import re
import urllib.request

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
STAGES = ("queue", "tokenization", "inference", "request")


def scrape(base_url: str) -> dict[str, float]:
    """Prometheus text -> {name: value summed over label sets} plus {name{labels}: value};
    histogram buckets are left out."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if 'le="' in labels:
            continue
        out[name] = out.get(name, 0.0) + value
        if labels:
            out[name + labels] = value
    return out


def delta(before: dict, after: dict, seconds: float) -> dict:
    """Batch shape, counted inputs and tokens, and per-stage mean time and busy seconds per
    second between two scrapes `seconds` apart."""

    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    res = {}
    if d("aft_batch_size_count") > 0:
        res["mean_batch_size"] = d("aft_batch_size_sum") / d("aft_batch_size_count")
        res["batches_per_s"] = d("aft_batch_size_count") / seconds
    if d("aft_batch_tokens_count") > 0:
        res["mean_batch_padded_tokens"] = d("aft_batch_tokens_sum") / d("aft_batch_tokens_count")
    res["inputs"] = d("aft_inputs_total")
    res["prompt_tokens"] = d("aft_prompt_tokens_total")
    for stage in STAGES:
        name = f"aft_{stage}_duration_seconds"
        if d(name + "_count") > 0:
            res[f"{stage}_mean_ms"] = 1e3 * d(name + "_sum") / d(name + "_count")
            res[f"{stage}_busy_s_per_s"] = d(name + "_sum") / seconds
    return res
