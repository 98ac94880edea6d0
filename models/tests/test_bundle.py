"""Export, reload and validate model bundles; the reference CLI; the committed tiny fixture."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from aft import bundle, export, fixtures, manifest, reference
from aft.distill.teacher import batch_ids
from aft.encoder import AFTEncoder, EncoderConfig

TINY = fixtures.TINY_DIR
TEXTS = ["Hello world", "A longer sentence, with punctuation and numbers 12345.", "", "ok " * 300]


def small_model(num_labels=0, variant="conv"):
    torch.manual_seed(0)
    cfg = EncoderConfig(
        vocab_size=30522,
        d_model=16,
        n_layers=1,
        d_ff=32,
        max_len=64,
        variant=variant,
        n_heads=4,
        kernel_size=5,
        num_labels=num_labels,
        token_embedding_dim=4,
        embedding_dim=12,
    )
    return AFTEncoder(cfg).eval()


def tokenize(bundle_dir, texts):
    """Right-padded (input_ids, attention_mask) from the bundle's own tokenizer.json."""
    return batch_ids(reference.Tokenizer.from_file(str(Path(bundle_dir) / "tokenizer.json")), texts)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_export_reload_matches_eager(tmp_path, dtype):
    model = small_model(num_labels=2)
    out = export.export_bundle(
        model, fixtures.minilm_tokenizer(), tmp_path / "b", "t", ["neg", "pos"], dtype
    )
    m = bundle.load_manifest(out)
    assert m["dtype"] == dtype and m["labels"] == ["neg", "pos"] and m["embedding_dim"] == 12
    assert m["model"] == asdict(model.config)
    ids, mask = tokenize(out, TEXTS)
    assert ids.shape[1] <= 64  # the bundled tokenizer truncates at max_seq_len, pads nothing
    loaded = torch.jit.load(str(out / "model.pt"))
    params = list(loaded.parameters())
    assert all(p.dtype == getattr(torch, dtype) for p in params)
    eager = bundle.load_eager(out)
    with torch.no_grad():
        got = loaded.float()(ids, mask)
        want = eager(ids, mask)
        tol = 1e-6
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        if dtype == "float32":  # float32 storage is lossless: the original model itself
            for a, b in zip(model(ids, mask), want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_export_cli_from_checkpoint(tmp_path):
    model = small_model(num_labels=3, variant="full")
    ckpt = tmp_path / "ckpt.pt"
    labels = ["a", "b", "c"]
    torch.save(
        {"config": asdict(model.config), "state_dict": model.state_dict(), "labels": labels}, ckpt
    )
    args = ["--checkpoint", str(ckpt), "--tokenizer", str(fixtures.minilm_tokenizer())]
    args += ["--out", str(tmp_path / "b"), "--name", "cli", "--dtype", "float16"]
    export.main(args + ["--description", "from the CLI"])
    m = bundle.load_manifest(tmp_path / "b")
    assert (m["name"], m["description"], m["labels"]) == ("cli", "from the CLI", labels)


def test_decay_bundle_states_long_limit(tmp_path):
    """An AFT-decay model made with max_len 64 exported for 65,536 tokens: the manifest, the
    tokenizer's truncation and the scripted module all take the new limit, and the reloaded
    model equals eager on a 3,000-token input (47 chunks)."""
    model = small_model(variant="decay")
    out = export.export_bundle(
        model, fixtures.minilm_tokenizer(), tmp_path / "b", "long", max_seq_len=65536
    )
    m = bundle.load_manifest(out)
    assert m["max_seq_len"] == 65536 and m["model"]["max_len"] == 65536
    assert m["model"]["variant"] == "decay"
    # The exporter lists (and has checked against eager) the late-chunking method.
    assert m["methods"] == ["embed_spans"]
    tok = bundle.load_tokenizer(out, m)
    assert len(tok.encode("word " * 70000).ids) == 65536
    ids = tokenize(out, ["long " * 3000])[0]
    assert ids.shape[1] > 3000
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got = bundle.load_scripted(out)(ids, mask)
        want = bundle.load_eager(out)(ids, mask)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="position bias"):
        export.export_bundle(
            small_model(variant="full"),
            fixtures.minilm_tokenizer(),
            tmp_path / "f",
            "f",
            None,
            max_seq_len=65536,
        )


def test_manifest_validation(tmp_path):
    out = export.export_bundle(small_model(), fixtures.minilm_tokenizer(), tmp_path / "b", "t")
    path = out / "manifest.json"
    good = json.loads(path.read_text())

    def broken(edit, match):
        m = json.loads(json.dumps(good))
        edit(m)
        path.write_text(json.dumps(m))
        with pytest.raises(ValueError, match=match):
            bundle.load_manifest(out)

    broken(lambda m: m.update(format_version=2), "manifest.json.*format_version")
    broken(lambda m: m.pop("max_seq_len"), "manifest.json.*max_seq_len")
    broken(lambda m: m.update(normalize="yes"), "normalize")
    broken(lambda m: m.update(labels=["x"]), "labels")
    broken(lambda m: m["files"]["model.pt"].update(sha256="0" * 64), "model.pt.*sha256")
    path.write_text(json.dumps(good))
    (out / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json.*sha256"):
        bundle.load_manifest(out)


def test_tiny_fixture_matches_manifest_and_regenerates(tmp_path):
    m = bundle.load_manifest(TINY)
    assert m["name"] == "tiny-aft" and m["labels"] is None and m["dtype"] == "float16"
    assert m["model"]["variant"] == "local" and m["max_seq_len"] == 128
    assert sum(f.stat().st_size for f in TINY.iterdir()) < 2.5e6
    tok = reference.Tokenizer.from_file(str(TINY / "tokenizer.json"))
    assert tok.padding is None and tok.truncation["max_length"] == 128
    ids, mask = tokenize(TINY, TEXTS)
    scripted = torch.jit.load(str(TINY / "model.pt")).float()
    with torch.no_grad():
        emb, logits = scripted(ids, mask)
        assert emb.shape == (len(TEXTS), m["embedding_dim"]) and logits.shape == (len(TEXTS), 0)
        torch.testing.assert_close(emb, bundle.load_eager(TINY)(ids, mask)[0])
        # aft.fixtures regenerates the same parameters; model.pt also holds the scripted code,
        # which may have changed since the fixture was committed, so outputs are only close.
        fresh = fixtures.write_tiny(tmp_path / "tiny")
        regen = torch.jit.load(str(fresh / "model.pt"))
        committed = torch.jit.load(str(TINY / "model.pt")).state_dict()
        for key, value in regen.state_dict().items():
            assert torch.equal(value, committed[key]), key
        torch.testing.assert_close(regen.float()(ids, mask)[0], emb, rtol=1e-5, atol=1e-5)
    assert json.loads((fresh / "manifest.json").read_text())["model"] == m["model"]


def test_reference_cli(tmp_path):
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(TEXTS))
    out = tmp_path / "ref.json"
    reference.main(["--bundle", str(TINY), "--texts", str(texts), "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["texts"] == TEXTS and len(r["embeddings"]) == len(TEXTS)
    assert r["token_counts"][2] == 2 and r["token_counts"][3] == 128  # [CLS] [SEP]; truncated
    assert r["logits"] == [[]] * len(TEXTS)
    ids, mask = tokenize(TINY, TEXTS)
    with torch.no_grad():
        emb = torch.jit.load(str(TINY / "model.pt")).float()(ids, mask)[0]
    torch.testing.assert_close(torch.tensor(r["embeddings"]), emb, rtol=1e-5, atol=1e-6)


def test_manifest_schema_checks_types_and_fills_defaults(tmp_path):
    out = export.export_bundle(small_model(), fixtures.minilm_tokenizer(), tmp_path / "b", "t")
    good = json.loads((out / "manifest.json").read_text())
    # What the exporter writes passes as written; it writes no int8 copy (aft.distill.quantize).
    assert manifest.validate(good, "m") == {**good, "int8_model": None}
    older = {k: v for k, v in good.items() if k not in ("description", "labels", "methods")}
    filled = manifest.validate(older, "m")
    assert (filled["description"], filled["labels"], filled["methods"]) == ("", None, [])
    for field, value, match in [
        ("format_version", True, "format_version.*wrong type"),
        ("embedding_dim", 0, "embedding_dim.*less than 1"),
        ("pooling", "max", "pooling"),
        ("labels", [], "labels.*fewer than 1"),
        ("files", {"model.pt": good["files"]["model.pt"]}, "files.tokenizer.json' missing"),
    ]:
        with pytest.raises(ValueError, match=match):
            manifest.validate({**good, field: value}, "m")
    # int8_model names another listed file.
    with_int8 = {**good, "int8_model": "model-int8.pt"}
    with_int8["files"] = {**good["files"], "model-int8.pt": good["files"]["model.pt"]}
    assert manifest.validate(with_int8, "m")["int8_model"] == "model-int8.pt"
    assert manifest.model_file(with_int8, "int8") == "model-int8.pt"
    assert manifest.model_file(with_int8) == manifest.model_file(good) == "model.pt"
    for value in ["model.pt", "absent.pt"]:
        with pytest.raises(ValueError, match="int8_model.*not a file in 'files'"):
            manifest.validate({**with_int8, "int8_model": value}, "m")
    with pytest.raises(ValueError, match="int8_model.*wrong type"):
        manifest.validate({**with_int8, "int8_model": 8}, "m")
    with pytest.raises(ValueError, match="no int8 model"):
        manifest.model_file(good, "int8")
    bad_hash = {**good["files"], "model.pt": {"sha256": "xyz", "size": 1}}
    with pytest.raises(ValueError, match="files.model.pt.sha256"):
        manifest.validate({**good, "files": bad_hash}, "m")
