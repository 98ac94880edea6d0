"""aft-serve's /metrics (the peers expose the batch and input counters under the same names):
one scrape, and the figures between two scrapes. Family names are checked against
src/metrics.json, the service's one list of metrics, so a rename fails here at once."""

from __future__ import annotations

import json
import re
import urllib.request

from harness import ROOT

CONTRACT = ROOT / "src" / "metrics.json"
_FAMILIES = {m["name"] for m in json.loads(CONTRACT.read_text())}


def family(name: str) -> str:
    if name not in _FAMILIES:
        raise KeyError(f"{name} is not a metric family in {CONTRACT}")
    return name


BATCH_SIZE = family("aft_batch_size")
BATCH_TOKENS = family("aft_batch_tokens")
INPUTS = family("aft_inputs_total")
PROMPT_TOKENS = family("aft_prompt_tokens_total")
QUEUE_DEPTH = family("aft_queue_depth")
IN_FLIGHT = family("aft_requests_in_flight")
STAGES = {
    stage: family(f"aft_{stage}_duration_seconds")
    for stage in ("queue", "tokenization", "inference", "request")
}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


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
    if d(BATCH_SIZE + "_count") > 0:
        res["mean_batch_size"] = d(BATCH_SIZE + "_sum") / d(BATCH_SIZE + "_count")
        res["batches_per_s"] = d(BATCH_SIZE + "_count") / seconds
    if d(BATCH_TOKENS + "_count") > 0:
        res["mean_batch_padded_tokens"] = d(BATCH_TOKENS + "_sum") / d(BATCH_TOKENS + "_count")
    res["inputs"] = d(INPUTS)
    res["prompt_tokens"] = d(PROMPT_TOKENS)
    for stage, name in STAGES.items():
        if d(name + "_count") > 0:
            res[f"{stage}_mean_ms"] = 1e3 * d(name + "_sum") / d(name + "_count")
            res[f"{stage}_busy_s_per_s"] = d(name + "_sum") / seconds
    return res


def queue_state(scraped: dict) -> dict:
    """Inputs waiting and requests in flight, from one scrape."""
    return {"queue_depth": scraped.get(QUEUE_DEPTH), "in_flight": scraped.get(IN_FLIGHT)}
