"""bench/against_infinity.py's pure parts: its sides, infinity's command line and API, the request
bodies of both servers (the same texts), and the ratios to the reference side. No server runs."""

import importlib.util
import json
from pathlib import Path

import pytest
from harness.ab import summarize
from harness.corpus import body_files, request_body
from harness.servers import INFINITY_MODEL, INFINITY_VENV, api, command

SCRIPT = Path(__file__).resolve().parents[1] / "against_infinity.py"


def script():
    """The script as a module (it lives in bench/, which is not a package)."""
    spec = importlib.util.spec_from_file_location("against_infinity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_bundle_is_a_side_then_infinity_serves_the_teacher():
    m = script()
    sides = m.sides_of(["models/aft-mini@float", "models/aft-mini@int8"], Path("/t"), "0.0.78")
    assert list(sides) == ["A", "B", m.INFINITY]
    assert (sides["A"].bundle, sides["A"].flags) == (
        Path("models/aft-mini"),
        ["--precision", "float"],
    )
    assert sides["B"].flags == ["--precision", "int8"]
    assert sides["A"].kind == sides["B"].kind == "aft-serve"
    inf = sides[m.INFINITY]
    assert (inf.kind, inf.bundle, inf.flags) == ("infinity", Path("/t"), [])
    assert "0.0.78" in inf.name
    with pytest.raises(ValueError, match="int8"):
        m.sides_of(["models/aft-mini@fp16"], Path("/t"), "0.0.78")


def test_infinity_runs_the_torch_engine_on_the_cpu_from_the_folder():
    program, argv = command("infinity", Path("/teacher"), [])
    assert program == [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2"]
    flags = dict(zip(argv[::2], argv[1::2], strict=True))
    assert flags["--model-id"] == "/teacher"
    assert (flags["--engine"], flags["--device"]) == ("torch", "cpu")
    assert flags["--served-model-name"] == INFINITY_MODEL
    assert (api("infinity").embed, api("infinity").ready) == ("/embeddings", "/health")
    for kind in ("aft-serve", "python-plain", "python-batched"):
        assert (api(kind).embed, api(kind).ready, api(kind).openai_model) == (
            "/v1/embed",
            "/health/ready",
            None,
        )


def test_both_servers_get_the_same_texts_in_their_own_shape(tmp_path):
    assert request_body("a cat") == {"inputs": "a cat"}
    assert request_body("a cat", "m") == {"model": "m", "input": ["a cat"]}
    assert request_body(["a", "b"], "m") == {"model": "m", "input": ["a", "b"]}
    ours, theirs = body_files(tmp_path), body_files(tmp_path, INFINITY_MODEL)
    for point in ("short", "mixed"):
        assert ours[point] != theirs[point]
        a = [json.loads(x) for x in ours[point].read_text().splitlines()]
        b = [json.loads(x) for x in theirs[point].read_text().splitlines()]
        assert a and [x["inputs"] for x in a] == [x["input"][0] for x in b]
        assert all(x["model"] == INFINITY_MODEL and len(x["input"]) == 1 for x in b)
    # aft-serve's files keep their names (the benchmark page names bodies/mixed.jsonl).
    assert ours["mixed"].name == "mixed.jsonl"


def test_every_side_is_compared_with_the_reference_or_b_with_a(capsys):
    def rounds(*rates):
        return [{"ok_per_s": r, "p50_ms": 1.0, "p99_ms": 2.0} for r in rates]

    m = script()
    sides = m.sides_of(["x@float", "x@int8"], Path("/t"), "0.0.78")
    runs = {
        "A": {"short": rounds(300, 100, 200)},
        "B": {"short": rounds(400, 410, 420)},
        m.INFINITY: {"short": rounds(100, 90, 110)},
    }
    summary = summarize(runs, sides, reference=m.INFINITY)["short"]
    assert summary["medians"]["A"]["ok_per_s"] == 200
    assert summary["ratio_to_reference"] == {"A": 2.0, "B": 4.1}
    assert "B/infinity requests/s: 4.100" in capsys.readouterr().out
    # Two sides and no reference: B/A, as bench/ab_bundles.py prints it.
    two = {k: sides[k] for k in ("A", "B")}
    assert summarize({k: runs[k] for k in two}, two)["short"]["ratio_b_over_a"] == 2.05
