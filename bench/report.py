"""Turns a run's results/*.json into BENCHMARKS.md and bench-*.png.

Usage: python bench/report.py [--results DIR] [--out DIR] [--status TEXT]   (bench/run-all
calls it). Full runs write docs/; quick (smoke) runs write RESULTS/docs/ and are refused in docs/.
The hand-written prose comes from bench/analysis.md, which holds no measured numbers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness import BENCH, ROOT
from harness.results import Results
from page import markdown, plots
from page.run import Run

DOCS = ROOT / "docs"


# The standalone benchmarks' part of the page (bench/fairness.py, bench/two_models.py: not run by
# run-all) is written by hand from their output, below this line; a regenerated page keeps it.
STANDALONE_MARKER = (
    "<!-- Standalone benchmarks: written from their scripts' output; report.py keeps this part. -->"
)


def kept_tail(page: Path) -> str:
    """The standalone part of the existing page, from its marker on ('' when there is none)."""
    if not page.exists():
        return ""
    text = page.read_text()
    at = text.find(STANDALONE_MARKER)
    return "\n" + text[at:] if at >= 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("AFT_BENCH_RESULTS", BENCH / "results")),
        help="results directory (default bench/results, or $AFT_BENCH_RESULTS)",
    )
    ap.add_argument("--out", type=Path, help="where the page and plots go (default: see above)")
    ap.add_argument(
        "--status",
        default=os.environ.get("AFT_BENCH_STATUS", ""),
        help="a line shown under the title (e.g. PROVISIONAL ...)",
    )
    a = ap.parse_args()
    run = Run(Results(a.results).all())
    if not run.parts:
        raise SystemExit(f"no results in {a.results}: run bench/run-all first")
    out = (a.out or (a.results / "docs" if run.quick else DOCS)).resolve()
    if run.quick and out == DOCS.resolve():
        raise SystemExit("quick (smoke) results do not go into docs/: pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    analysis = BENCH / "analysis.md"
    page = markdown(run, analysis.read_text() if analysis.exists() else "", a.status)
    target = out / "BENCHMARKS.md"
    page += kept_tail(target)
    target.write_text(page)
    for path in [out / "BENCHMARKS.md", *plots.write_all(run, out)]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
