"""The API document matches the service: schemathesis generates requests from the live
/openapi.json (valid and invalid ones, every operation) and checks every answer against the
document: status documented, body and content type as described, schema-valid requests
accepted, schema-invalid ones refused, no server errors. Deterministic: a fixed seed, a fixed
number of examples, no example database (`--generation-deterministic`).

The served bundle is the tiny test model with a classifier head, so that /v1/classify is
exercised for real (without a head it answers 400 to every request)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20260
MAX_EXAMPLES = 40
LABELS = ["animals", "music", "sport"]


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "aft-serve"


@pytest.fixture(scope="module")
def headed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from aft.encoder import AFTEncoder
    from aft.export import export_bundle
    from aft.fixtures import TINY_CONFIG, TINY_DIR, tiny_model

    out = tmp_path_factory.mktemp("bundle") / "tiny-head"
    torch.manual_seed(1)
    model = AFTEncoder(dataclasses.replace(TINY_CONFIG, num_labels=len(LABELS)))
    model.load_state_dict(tiny_model().state_dict(), strict=False)
    export_bundle(
        model.eval(),
        TINY_DIR / "tokenizer.json",
        out,
        name="tiny-head",
        labels=LABELS,
        dtype="float32",
    )
    return out


def test_the_service_answers_as_its_openapi_document_says(
    headed_bundle: Path, tmp_path: Path
) -> None:
    from harness.serve_process import ServeProcess

    st = shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (models/pyproject.toml [dev], scripts/setup)")
    if not binary().exists():
        pytest.fail(f"{binary()} does not exist: build it (cargo build --release --locked)")
    args = [
        "--model-dir",
        str(headed_bundle),
        "--max-batch-tokens",
        "1024",
        "--max-batch-size",
        "16",
        "--intra-op-threads",
        "1",
        # Small, so that lists past the limit are generated and refused (413).
        "--max-client-batch-size",
        "8",
    ]
    with ServeProcess(args=args, binary=binary(), env={"AFT_LOG_LEVEL": "error"}) as srv:
        run = subprocess.run(
            [
                st,
                "--config-file",
                str(CONFIG),
                "--no-color",
                "run",
                f"{srv.url}/openapi.json",
                "--seed",
                str(SEED),
                "--max-examples",
                str(MAX_EXAMPLES),
                # Also: no example database, so no run replays an earlier one's findings.
                "--generation-deterministic",
                "--request-timeout",
                "30",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = srv.log_text()
    assert run.returncode == 0, (
        f"{run.stdout[-12000:]}\n{run.stderr[-4000:]}\nserver log:\n{log[-4000:]}"
    )
    assert "0 failures" in run.stdout or "passed" in run.stdout, run.stdout[-4000:]
