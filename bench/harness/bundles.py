"""Stand-in model bundles for the long-document benchmarks, when no trained one is given: their
time and memory depend on the model's shape, not on its weights (their quality figures mean
nothing)."""

from __future__ import annotations

from pathlib import Path

from aft.bundle import load_manifest

from harness import ROOT

LONG_SEQ_LEN = 65536
# aft-serve's --precision values (a bundle spec's `@PRECISION`).
PRECISIONS = ("auto", "float", "int8")


def bundle_spec(spec: str) -> tuple[Path, list[str]]:
    """A bundle as a benchmark names it: `DIR`, or `DIR@PRECISION` (auto, float or int8) to
    serve it at that precision, e.g. `models/aft-mini@int8` (its int8 copy) against
    `models/aft-mini@float`. Returns the directory and the aft-serve flags (`--precision P`, or
    none: the server's default, auto)."""
    head, at, tail = spec.rpartition("@")
    if at and tail in PRECISIONS and head:
        return Path(head), ["--precision", tail]
    if at and "/" not in tail:
        raise ValueError(f"{spec!r}: after '@' comes one of {', '.join(PRECISIONS)}")
    return Path(spec), []


def random_decay_bundle(out: Path, max_seq_len: int = LONG_SEQ_LEN, origin: str = "") -> Path:
    """An AFT-decay encoder of aft-mini's shape (d_model 256, 4 layers, 384 out), random
    weights, no head, accepting `max_seq_len` tokens; `origin` names the benchmark in the
    manifest's description."""
    from aft.encoder import AFTEncoder, EncoderConfig
    from aft.export import export_bundle
    from aft.fixtures import minilm_tokenizer

    mini = load_manifest(ROOT / "models" / "aft-mini")["model"]
    cfg = EncoderConfig(**{**mini, "variant": "decay", "num_labels": 0})
    where = f" ({origin})" if origin else ""
    return export_bundle(
        AFTEncoder(cfg).eval(),
        minilm_tokenizer(),
        out,
        name="decay-random",
        description=f"random-weight AFT-decay of aft-mini's shape{where}",
        max_seq_len=max_seq_len,
    )


def bundle_for_run(given: Path | None, quick: bool, tmp: Path, origin: str) -> Path:
    """The bundle a long-document benchmark runs: the one given, else the tiny test fixture
    (--quick), else a random-weight AFT-decay bundle of aft-mini's shape, written under `tmp`."""
    if given:
        return given
    if quick:
        from aft.fixtures import write_tiny_decay

        return write_tiny_decay(tmp / "tiny-decay")
    from harness import log

    log("exporting a random-weight AFT-decay bundle of aft-mini's shape")
    return random_decay_bundle(tmp / "decay-random", origin=origin)
