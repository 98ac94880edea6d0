"""Command line: python -m deploy_checks [--metrics-file FILE] [--only a,b] [--binary PATH]."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from . import __doc__ as package_doc
from .framework import Options, run_checks
from .parsers import aft_options
from .registry import all_checks

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/check-deploy", description=package_doc)
    ap.add_argument(
        "--metrics-file",
        type=Path,
        help="compare the catalog with this Prometheus exposition instead of a live service",
    )
    ap.add_argument("--only", help="comma-separated checks to run (with what they need)")
    ap.add_argument(
        "--binary",
        type=Path,
        default=ROOT / "target/release/aft-serve",
        help="the aft-serve to stage and start",
    )
    args = ap.parse_args(argv)
    options = Options(
        root=ROOT,
        venv=Path(os.environ.get("AFT_VENV", ROOT / ".venv")),
        binary=args.binary.resolve(),
        metrics_file=args.metrics_file.resolve() if args.metrics_file else None,
    )
    # What the checks start must depend on the files checked, not on the caller's shell: drop
    # aft-serve's own settings and any library path (the staged layout must load without one).
    for name in aft_options(ROOT) | {"LD_LIBRARY_PATH"}:
        os.environ.pop(name, None)
    # A CI timeout sends SIGTERM: unwind like Ctrl-C, so servers stop and folders go.
    signal.signal(signal.SIGTERM, _terminate)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        report = run_checks(all_checks(options), options, only)
    except ValueError as e:  # an unknown check name in --only
        ap.error(str(e))
    failed = report.failed
    print(f"deploy checks: {'FAIL' if failed else 'PASS'} ({len(failed)} failed)")
    return 1 if failed else 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
