"""aft.head: training a classification head on a tiny data set over the committed tiny-aft
bundle, the bundle it writes (loads, labels, hashes, predictions), and every bad-data error."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from aft import fixtures
from aft.bundle import load_eager, load_manifest
from aft.head import debian_sections
from aft.head.__main__ import main
from aft.head.data import Columns, Example, load_examples
from aft.head.embed import length_batches
from aft.head.errors import DataError
from aft.head.fit import fit_logistic
from aft.head.metrics import score
from aft.head.progress import Progress
from aft.head.split import components, stratified_group_split
from aft.reference import reference_outputs
from harness.serve_process import DEFAULT_BINARY, ServeProcess

TINY = fixtures.TINY_DIR
MODELS_DIR = Path(__file__).resolve().parents[1]
TOPICS = {
    "cooking": ["bake", "oven", "recipe", "flour", "soup", "salt", "butter", "knead"],
    "sport": ["goal", "match", "team", "score", "ball", "coach", "league", "pitch"],
    "weather": ["rain", "sunny", "cloud", "storm", "wind", "snow", "forecast", "fog"],
}


def tiny_rows(per_label: int = 16, seed: int = 0) -> list[tuple[str, str]]:
    """Texts made of one topic's words: separable even by a random-weight encoder."""
    rng = random.Random(seed)
    return [
        (" ".join(rng.choice(words) for _ in range(6)), label)
        for label, words in TOPICS.items()
        for _ in range(per_label)
    ]


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def train(tmp_path: Path, data: Path, *extra: str, out: Path | None = None) -> tuple[int, Path]:
    out = out or tmp_path / "bundle"
    argv = ["train", "--bundle", str(TINY), "--data", str(data), "--out", str(out)]
    return main([*argv, "--quiet", "--threads", "1", *extra]), out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One head trained on the tiny topics, with its report and held-out predictions."""
    tmp = tmp_path_factory.mktemp("head")
    data = write_csv(tmp / "topics.csv", tiny_rows())
    report, preds = tmp / "report.json", tmp / "predictions.csv"
    rc, out = train(tmp, data, "--report", str(report), "--predictions", str(preds))
    assert rc == 0
    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"out": out, "report": json.loads(report.read_text()), "predictions": rows}


# ---------------------------------------------------------------- the written bundle


def test_written_bundle_validates_with_the_new_labels_and_matching_hashes(trained):
    m = load_manifest(trained["out"])  # checks every file's sha256 and size
    assert m["labels"] == sorted(TOPICS)
    assert m["model"]["num_labels"] == 3
    assert m["name"] == "bundle"
    assert m["dtype"] == "float16"  # the base bundle's
    assert (trained["out"] / "MODEL_CARD.md").is_file()
    assert "Held-out evaluation" in (trained["out"] / "MODEL_CARD.md").read_text()


def test_written_torchscript_predicts_what_the_report_scored(trained):
    """Every held-out row, run alone through the written model.pt as the service runs it,
    gets the label the trainer reported for it."""
    rows = trained["predictions"]
    assert len(rows) == trained["report"]["data"]["test_rows"] > 0
    out = reference_outputs(trained["out"], [r["text"] for r in rows])
    labels = load_manifest(trained["out"])["labels"]
    for r, logits in zip(rows, out["logits"], strict=True):
        assert len(logits) == 3
        assert labels[max(range(3), key=logits.__getitem__)] == r["predicted"]


def test_scripted_model_returns_embeddings_and_three_logits(trained):
    model = torch.jit.load(str(trained["out"] / "model.pt")).float().eval()
    ids = torch.tensor([[101, 2000, 3000, 102], [101, 2000, 102, 0]])
    mask = (ids != 0).long()
    emb, logits = model(ids, mask)
    assert emb.shape == (2, 32) and logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_head_training_leaves_the_encoder_unchanged(trained):
    texts = ["rain and wind", "bake the bread"]
    new = reference_outputs(trained["out"], texts)["embeddings"]
    old = reference_outputs(TINY, texts)["embeddings"]
    assert torch.allclose(torch.tensor(new), torch.tensor(old))


def test_report_beats_the_majority_baseline_and_counts_add_up(trained):
    r = trained["report"]
    assert r["data"]["rows"] == 48
    assert r["data"]["train_rows"] + r["data"]["test_rows"] == 48
    assert r["data"]["labels"] == {label: 16 for label in TOPICS}
    assert r["baseline"]["accuracy"] == pytest.approx(1 / 3, abs=0.01)
    assert r["test"]["accuracy"] >= r["baseline"]["accuracy"] + 0.3
    assert {s["label"] for s in r["test"]["per_label"]} == set(TOPICS)
    assert sum(s["support"] for s in r["test"]["per_label"]) == r["data"]["test_rows"]


def test_fine_tune_trains_the_encoder_too_and_writes_a_valid_bundle(tmp_path):
    data = write_csv(tmp_path / "topics.csv", tiny_rows(per_label=8))
    rc, out = train(tmp_path, data, "--fine-tune", "--epochs", "1", "--lr", "1e-3")
    assert rc == 0
    assert load_manifest(out)["labels"] == sorted(TOPICS)
    texts = ["rain and wind", "bake the bread"]
    new = torch.tensor(reference_outputs(out, texts)["embeddings"])
    old = torch.tensor(reference_outputs(TINY, texts)["embeddings"])
    assert not torch.allclose(new, old, atol=1e-3)


def test_jsonl_with_renamed_keys_and_float32_storage(tmp_path):
    data = tmp_path / "topics.jsonl"
    data.write_text("".join(json.dumps({"body": t, "topic": y}) + "\n" for t, y in tiny_rows()))
    rc, out = train(
        tmp_path, data, "--text-column", "body", "--label-column", "topic", "--dtype", "float32"
    )
    assert rc == 0
    m = load_manifest(out)
    assert m["dtype"] == "float32" and m["labels"] == sorted(TOPICS)
    assert load_eager(out).config.num_labels == 3


def test_existing_bundle_is_replaced_only_with_overwrite(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", tiny_rows(per_label=8))
    assert train(tmp_path, data)[0] == 0
    rc, out = train(tmp_path, data)
    assert rc == 1
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert train(tmp_path, data, "--overwrite", "--name", "second")[0] == 0
    assert load_manifest(out)["name"] == "second"
    assert not list(tmp_path.glob(".bundle*")), "no temporary or old directories left behind"


def test_overwrite_refuses_a_directory_that_is_not_a_bundle(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", tiny_rows(per_label=8))
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _ = train(tmp_path, data, "--overwrite", out=out)
    assert rc == 1
    assert "is not a bundle (no manifest.json)" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_out_may_not_be_the_base_bundle(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", tiny_rows(per_label=8))
    rc, _ = train(tmp_path, data, "--overwrite", out=TINY)
    assert rc == 1
    assert "is the base bundle itself" in capsys.readouterr().err


def test_a_broken_base_bundle_is_named(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv", tiny_rows(per_label=8))
    argv = ["train", "--bundle", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --bundle {tmp_path}") and "manifest.json: missing" in err


# ---------------------------------------------------------------- bad data

GOOD = [("rain all day", "weather"), ("win the match", "sport")] * 3


def csv_text(*lines: str) -> str:
    return "\n".join(lines) + "\n"


BAD_CSV = {
    "missing label": (
        csv_text("text,label", "rain today,weather", "no label here,"),
        ":3: missing label",
    ),
    "empty text": (csv_text("text,label", "rain today,weather", '"  ",sport'), ":3: empty text"),
    "duplicate header column": (
        csv_text("text,label,label", "rain today,weather,x"),
        ":1: duplicate column 'label' in the header (columns 2 and 3)",
    ),
    "header repeated mid-file": (
        csv_text("text,label", "rain today,weather", "text,label", "win,sport"),
        ":3: repeats the header of line 1",
    ),
    "wrong field count": (
        csv_text("text,label", "rain, then sun,weather"),
        ":2: 3 fields, but the header has 2",
    ),
    "unclosed quote": (
        csv_text("text,label", "ok,sport", '"rain all day,weather'),
        ":3: unreadable row",
    ),
    "no text column": (
        csv_text("sentence,label", "rain,weather"),
        ":1: no column 'text' in the header (found: sentence, label)",
    ),
    "header only": (csv_text("text,label"), ": no rows with data"),
    "empty file": ("", ": empty: expected a header line"),
    "one class": (
        csv_text("text,label", *["rain today,weather"] * 2, "more rain,weather"),
        ": every row has the label 'weather' (3 rows); a classifier needs at least two labels",
    ),
    "label with one example": (
        csv_text("text,label", "rain,weather", "snow,weather", "goal,sport"),
        ":4: label 'sport' has only this one example",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_gets_a_clear_error_naming_file_and_line(tmp_path, capsys, case):
    text, expected = BAD_CSV[case]
    data = tmp_path / "labels.csv"
    data.write_text(text)
    rc, out = train(tmp_path, data)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: "), err
    assert f"{data}{expected}" in err, err
    assert "Traceback" not in err
    assert not out.exists(), "nothing is written for bad data"


BAD_JSONL = {
    "invalid json": (
        '{"text": "a", "label": "x"}\n{"text": "b", "label": \n',
        ":2: not valid JSON",
    ),
    "missing label key": ('{"text": "a", "label": "x"}\n{"text": "b"}\n', ":2: missing label"),
    "null label": ('{"text": "a", "label": null}\n', ":1: missing label"),
    "duplicate key": ('{"text": "a", "label": "x", "label": "y"}\n', ":1: duplicate key 'label'"),
    "not an object": ('["a", "x"]\n', ":1: expected a JSON object, found a list"),
    "boolean label": (
        '{"text": "a", "label": true}\n',
        ":1: label must be a string, not a boolean",
    ),
    "number text": ('{"text": 3, "label": "x"}\n', ":1: text must be a string, not a number"),
    "no text key": ('{"body": "a", "label": "x"}\n', ":1: no key 'text' (found: body, label)"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_bad_jsonl_gets_a_clear_error_naming_file_and_line(tmp_path, capsys, case):
    text, expected = BAD_JSONL[case]
    data = tmp_path / "labels.jsonl"
    data.write_text(text)
    rc, _ = train(tmp_path, data)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{data}{expected}" in err, err


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path, capsys):
    data = tmp_path / "labels.csv"
    data.write_bytes(b"text,label\nrain,weather\ncaf\xe9 au lait,food\n")
    rc, _ = train(tmp_path, data)
    assert rc == 1
    assert f"{data}:3: not UTF-8 text (byte 0xe9)" in capsys.readouterr().err


def test_every_bad_row_is_listed_at_once(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text(csv_text("text,label", "a,x", ",y", "b,", "c,x,extra", "d,y"))
    with pytest.raises(DataError) as e:
        load_examples(data)
    msg = str(e.value)
    assert msg.startswith(f"{data}: 3 problems:")
    for line in (":3: empty text", ":4: missing label", ":5: 3 fields"):
        assert f"{data}{line}" in msg


def test_a_long_list_of_problems_shows_ten_and_counts_the_rest(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text(csv_text("text,label", *[f"row {i}," for i in range(25)]))
    with pytest.raises(DataError) as e:
        load_examples(data)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{data}: 25 problems:"
    assert lines[1] == f"  {data}:2: missing label"
    assert len(lines) == 12 and lines[-1] == "  ... and 15 more"


def test_a_label_whose_rows_share_one_group_cannot_be_held_out(tmp_path, capsys):
    rows = [(f"rain {i}", "weather", "g1") for i in range(3)] + [
        (f"goal {i}", "sport", f"s{i}") for i in range(3)
    ]
    data = write_csv(tmp_path / "labels.csv", rows, header=("text", "label", "src"))
    rc, _ = train(tmp_path, data, "--group-column", "src")
    assert rc == 1
    assert "label 'weather' has 3 examples (lines 2, 3, 4) but they share one group" in (
        capsys.readouterr().err
    )


def test_missing_group_column_is_named(tmp_path, capsys):
    data = write_csv(tmp_path / "labels.csv", GOOD)
    rc, _ = train(tmp_path, data, "--group-column", "source")
    assert rc == 1
    assert f"{data}:1: no column 'source' in the header" in capsys.readouterr().err


def test_unknown_suffix_asks_for_format(tmp_path, capsys):
    data = tmp_path / "labels.txt"
    data.write_text(csv_text("text,label", *[f"{t},{y}" for t, y in GOOD]))
    rc, _ = train(tmp_path, data)
    assert rc == 1
    assert "cannot tell the format from the suffix '.txt'" in capsys.readouterr().err


def test_missing_data_file(tmp_path, capsys):
    rc, _ = train(tmp_path, tmp_path / "nope.csv")
    assert rc == 1
    assert f"{tmp_path / 'nope.csv'}: no such file" in capsys.readouterr().err


def test_the_command_exits_1_with_one_line_and_no_traceback(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text(csv_text("text,label", "rain,weather", "goal,"))
    out = tmp_path / "bundle"
    argv = ["train", "--bundle", str(TINY), "--data", str(data), "--out", str(out)]
    p = subprocess.run(
        [sys.executable, "-m", "aft.head", *argv],
        cwd=MODELS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    assert p.stderr == f"error: {data}:3: missing label\n"


def test_bad_flag_values_are_usage_errors(tmp_path, capsys):
    data = write_csv(tmp_path / "labels.csv", GOOD)
    with pytest.raises(SystemExit) as e:
        train(tmp_path, data, "--test-fraction", "1.5")
    assert e.value.code == 2
    assert "must be between 0 and 1" in capsys.readouterr().err


# ---------------------------------------------------------------- split, metrics, batching


def examples(rows) -> list[Example]:
    return [Example(t, y, g, i + 2) for i, (t, y, g) in enumerate(rows)]


def test_split_keeps_groups_and_duplicate_texts_on_one_side():
    rng = random.Random(1)
    rows = []
    for g in range(60):
        label = "ab"[g % 2]
        rows += [(f"text {g} {k}", label, f"g{g}") for k in range(rng.randint(1, 4))]
    rows += [("Same Text", "a", None), ("same   text", "a", None)]
    ex = examples(rows)
    s = stratified_group_split(ex, 0.25, seed=3, path="x.csv")
    assert sorted(s.train + s.test) == list(range(len(ex)))
    side = {i: "test" for i in s.test} | {i: "train" for i in s.train}
    for comp in components(ex):
        assert len({side[i] for i in comp}) == 1
    for label in "ab":
        n = sum(1 for e in ex if e.label == label)
        held = sum(1 for i in s.test if ex[i].label == label)
        assert 0 < held < n and abs(held - 0.25 * n) <= 4
    again = stratified_group_split(ex, 0.25, seed=3, path="x.csv")
    assert again == s
    assert stratified_group_split(ex, 0.25, seed=4, path="x.csv") != s


def test_split_gives_every_label_a_test_and_a_training_row():
    ex = examples(
        [("a1", "a", None), ("a2", "a", None)] + [(f"b{i}", "b", None) for i in range(50)]
    )
    s = stratified_group_split(ex, 0.1, seed=0, path="x.csv")
    assert {ex[i].label for i in s.test} == {"a", "b"}
    assert {ex[i].label for i in s.train} == {"a", "b"}


def test_scores_match_a_hand_computed_confusion():
    labels = ["a", "b", "c"]
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 0, 1, 1, 2, 2])
    s = score(y, p, labels)
    a, b, c = s.per_label
    assert (a.precision, a.recall, a.support) == (1.0, 2 / 3, 3)
    assert (b.precision, b.recall) == (0.5, 0.5)
    assert (c.precision, c.recall) == (0.5, 1.0)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_a_nearly_constant_dimension_gets_no_huge_weight():
    """Folding 1/sd into the raw weights must not blow up a dimension that barely varies:
    it would turn the slightest change of it (other texts, fine-tuning) into wild logits."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 8, generator=g) * 0.3
    x[:, 0] += y * 0.6  # the informative dimension
    x[:, 1] = 0.5 + 1e-6 * torch.randn(200, generator=g)  # nearly constant
    head = fit_logistic(x, y, 2, l2=0.01)
    assert head.weight.abs().max() < 100
    assert (head.logits(x).argmax(-1) == y).float().mean() > 0.8


def test_embedding_batches_respect_the_token_budget_and_cover_every_row():
    lengths = [5, 300, 17, 17, 2, 64, 128, 1, 90]
    batches = length_batches(lengths, max_tokens=256, max_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 256


def test_progress_prints_rate_and_summary(capsys):
    import io

    buf = io.StringIO()
    p = Progress("embedding", 10, "texts", stream=buf, every=0.0)
    p.update(4)
    p.update(6)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("embedding: 4/10 texts (40%)")
    assert lines[-1].startswith("embedding: 10 texts in ")
    quiet = io.StringIO()
    Progress("x", 1, "y", stream=quiet, every=3600).update(1)
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------- the Debian example's data

PACKAGES = """\
Package: editor-one
Source: editors-src (1.0-1)
Section: editors
Description: a text editor
Description-md5: 11

Package: editor-one-data
Source: editors-src
Section: editors
Description: data for the text editor
Description-md5: 12

Package: editor-one-extra
Source: editors-src
Section: editors
Description: extra modes for the text editor
Description-md5: 13

Package: old-editor
Section: editors
Description: transitional dummy package
Description-md5: 14

Package: netcat-ish
Section: contrib/net
Description: network swiss army knife
Description-md5: 21
"""

TRANSLATIONS = """\
Package: editor-one
Description-md5: 11
Description-en: a text editor
 Edits text files.
 .
 Has modes for many languages.

Package: netcat-ish
Description-md5: 21
Description-en: network swiss army knife
 Reads and writes TCP and UDP connections.
"""


def test_debian_sections_joins_long_descriptions_and_caps_per_source(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "example_main_binary-amd64_Packages").write_text(PACKAGES)
    (lists / "example_main_i18n_Translation-en").write_text(TRANSLATIONS)
    out = tmp_path / "sections.csv"
    argv = ["--out", str(out), "--lists", str(lists), "--sections", "editors,net"]
    assert debian_sections.main([*argv, "--min-per-section", "1", "--per-source", "2"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_pkg = {r["package"]: r for r in rows}
    assert by_pkg["editor-one"]["text"] == (
        "a text editor. Edits text files. Has modes for many languages."
    )
    assert by_pkg["netcat-ish"]["label"] == "net"  # the component prefix is dropped
    assert by_pkg["netcat-ish"]["source"] == "netcat-ish"  # no Source field: its own
    assert "old-editor" not in by_pkg  # transitional packages are skipped
    editors = [r for r in rows if r["label"] == "editors"]
    assert len(editors) == 2 and {r["source"] for r in editors} == {"editors-src"}
    # Its output is valid training data, grouped by source.
    ex = load_examples(out, Columns(group="source"))
    assert len(ex) == len(rows)


def test_debian_sections_says_how_to_fetch_missing_translations(tmp_path, capsys):
    (tmp_path / "x_Packages").write_text(PACKAGES)
    assert debian_sections.main(["--out", str(tmp_path / "o.csv"), "--lists", str(tmp_path)]) == 1
    assert "apt-get update -o Acquire::Languages=en" in capsys.readouterr().err


# ---------------------------------------------------------------- served by aft-serve


@pytest.mark.skipif(not DEFAULT_BINARY.exists(), reason=f"{DEFAULT_BINARY} is not built")
def test_aft_serve_loads_the_bundle_and_classifies_with_the_new_labels(trained):
    with ServeProcess(args=["--model-dir", str(trained["out"])]) as srv:
        with urllib.request.urlopen(srv.url + "/info", timeout=10) as r:
            assert json.loads(r.read())["labels"] == sorted(TOPICS)
        rows = trained["predictions"][:6]
        body = json.dumps({"inputs": [r["text"] for r in rows], "top_k": 3}).encode()
        req = urllib.request.Request(
            srv.url + "/v1/classify", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.loads(r.read())
    assert out["model"] == "bundle"
    assert len(out["results"]) == len(rows)
    for row, top in zip(rows, out["results"], strict=True):
        assert {t["label"] for t in top} == set(TOPICS)
        assert sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-4)
        assert top[0]["label"] == row["predicted"]
