"""The report of bench/long_retrieval.py: its results (JSON) as the markdown tables of
docs/LONG_DOCUMENTS.md, and the issue's targets each run measures. Pure functions of the results."""

from __future__ import annotations

from harness.results import describe_cpu

SYSTEMS = {
    "late": "(a) AFT, late chunking (one pass)",
    "aft-alone": "(b) AFT, each chunk alone",
    "teacher-alone": "(c) teacher, each chunk alone",
}
COST_SYSTEMS = {
    "late": "AFT one pass (in process)",
    "service": "AFT one pass (aft-serve, one request)",
    "teacher-alone": "teacher, 256-token windows",
    "aft-alone": "AFT, 256-token windows",
}
MIB = 2**20


def markdown(res: dict) -> str:
    plan, bundle = res["plan"], res["bundle"]
    m = res["run"]["machine"]
    lines = [
        f"Measured {m['time']} on {describe_cpu(m)} with "
        f"{plan['threads']} torch threads (load average before "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg_before'])}, after "
        f"{', '.join(f'{x:.1f}' for x in res['run']['loadavg_after'])}), commit "
        f"{m['git_commit']}, "
        f"bundle `{bundle['name']}` (model.pt sha256 {str(bundle['model_pt_sha256'])[:12]}, "
        f"variant {bundle['hyper_parameters']['variant']}, max_seq_len {bundle['max_seq_len']}), "
        f"chunks of {plan['chunk_tokens']} tokens with overlap {plan['overlap']}, seed "
        f"{plan['seed']}:",
        "",
        f"```sh\n{res['command']}\n```",
        "",
    ]
    if res["data"]:
        lines += [
            "| tokens per document | documents (WordNet + Debian) | mean tokens | chunks per "
            "document | queries | target section straddles a chunk boundary |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
    for size, d in res["data"].items():
        src = d["by_source"]
        lines.append(
            f"| {int(size):,} | {d['documents']} ({src.get('wordnet', 0)} + "
            f"{src.get('debian', 0)}) | {d['tokens_mean']:,.0f} | {d['chunks_per_document']:.1f} "
            f"| {d['queries']:,} | {d['straddling_queries'] / d['queries']:.1%} |"
        )
    if res["retrieval"]:
        lines += [
            "",
            "| tokens | system | chunk recall@1 | chunk recall@10 | chunk recall@1 in its "
            "document | document recall@1 |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
    for size, per in res["retrieval"].items():
        for system, r in per.items():
            lines.append(
                f"| {int(size):,} | {SYSTEMS[system]} | {r['chunk_recall_at_1']:.3f} | "
                f"{r['chunk_recall_at_10']:.3f} | {r['chunk_recall_at_1_own_document']:.3f} | "
                f"{r['document_recall_at_1']:.3f} |"
            )
    if res.get("cost"):
        shown = [s for s in COST_SYSTEMS if any(s in c for c in res["cost"].values())]
        head = " | ".join(f"{COST_SYSTEMS[s]}: s, peak extra MiB" for s in shown)
        lines += [
            "",
            f"| tokens | {head} | teacher s / one pass s (in process; service) |",
            "| ---: | " + "--- | " * len(shown) + "---: |",
        ]
        for size, c in res["cost"].items():
            cells = [
                f"{c[s]['seconds_median']:.3f} s, {c[s]['peak_extra_bytes'] / MIB:,.0f} MiB"
                for s in shown
            ]
            ratios = f"{c['teacher_over_late']:.1f}x"
            if "teacher_over_service" in c:
                ratios += f"; {c['teacher_over_service']:.1f}x"
            lines.append(f"| {int(size):,} | {' | '.join(cells)} | {ratios} |")
        lines += [
            "",
            f"CPU: {describe_cpu(m)}. Seconds: median of the repeats per size ("
            + ", ".join(f"{int(s):,}: {c['repeats']}" for s, c in res["cost"].items())
            + "); peak extra memory: first repeat, VmHWM over the RSS of the loaded model "
            "(the service: over its idle RSS after a warm-up request).",
        ]
    if res.get("targets"):
        lines += ["", "| target (issue 15) | measured | met |", "| --- | --- | --- |"]
        for t in res["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def versus(late: dict) -> str:
    """The paired split behind a late-vs-alone comparison (runs before it was kept: nothing)."""
    vs = late.get("versus_alone")
    if not vs:
        return ""
    return (
        f" (top chunk right only late: {vs['a_only']}, only alone: {vs['b_only']}; "
        f"sign test p {vs['p_sign_test']:.2f})"
    )


def targets(res: dict) -> list[dict]:
    """The issue's targets that this run measures: retrieval at every size, cost at the
    largest size timed."""
    out = []
    for size, r in res["retrieval"].items():
        late, own, teacher = r["late"], r["aft-alone"], r["teacher-alone"]
        out.append(
            {
                "target": f"late chunking beats chunks alone on chunk recall@1 ({int(size):,})",
                "measured": f"{late['chunk_recall_at_1']:.3f} vs {own['chunk_recall_at_1']:.3f}"
                + versus(late),
                "met": late["chunk_recall_at_1"] > own["chunk_recall_at_1"],
            }
        )
        ratio = late["chunk_recall_at_10"] / max(teacher["chunk_recall_at_10"], 1e-12)
        out.append(
            {
                "target": f"late chunk recall@10 >= 0.9 x the teacher's ({int(size):,})",
                "measured": f"{ratio:.2f} x",
                "met": ratio >= 0.9,
            }
        )
    if res.get("cost"):
        size = max(res["cost"], key=int)
        c = res["cost"][size]
        # "One request": through the service when it was measured, else the in-process pass.
        how, system, ratio = "in process", "late", c["teacher_over_late"]
        if "service" in c:
            how, system, ratio = "aft-serve, one request", "service", c["teacher_over_service"]
        mem = c[system]["peak_extra_bytes"]
        out.append(
            {
                "target": f"one pass under 1 GiB of extra memory ({int(size):,}, {how})",
                "measured": f"{mem / MIB:,.0f} MiB",
                "met": mem < 2**30,
            }
        )
        out.append(
            {
                "target": f"one pass >= 3x faster than the teacher in 256-token windows "
                f"({int(size):,}, {how})",
                "measured": f"{ratio:.1f}x",
                "met": ratio >= 3,
            }
        )
    return out
