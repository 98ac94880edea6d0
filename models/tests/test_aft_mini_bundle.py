"""The committed aft-mini bundle: manifest against files, dimensions, labels, a sanity check."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from aft.distill.corpus import LEXNAMES
from tokenizers import Tokenizer

BUNDLE = Path(__file__).resolve().parents[1] / "aft-mini"
MAX_BYTES = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((BUNDLE / "manifest.json").read_text())


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return torch.jit.load(str(BUNDLE / "model.pt"), map_location="cpu").float().eval()


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(str(BUNDLE / "tokenizer.json"))


def run(model, tok, texts):
    encs = [tok.encode(t) for t in texts]
    t = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(encs), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
    with torch.no_grad():
        return model(ids, mask)


def test_files_match_manifest(manifest):
    listed = set(manifest["files"])
    on_disk = {p.name for p in BUNDLE.iterdir()} - {"manifest.json", "MODEL_CARD.md"}
    assert listed == on_disk
    for name, entry in manifest["files"].items():
        data = (BUNDLE / name).read_bytes()
        assert len(data) == entry["size"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name


def test_library_validates_manifest(manifest):
    from aft.bundle import load_manifest

    assert load_manifest(BUNDLE)["name"] == "aft-mini"


def test_fields(manifest):
    assert manifest["format_version"] == 1
    assert manifest["name"] == "aft-mini"
    assert manifest["dtype"] == "float16"
    assert manifest["model"]["embedding_dim"] == manifest["embedding_dim"] == 384
    assert manifest["max_seq_len"] == manifest["model"]["max_len"]
    assert (BUNDLE / "MODEL_CARD.md").is_file()


def test_total_size(manifest):
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) <= MAX_BYTES


def test_labels_are_wordnet_lexnames(manifest):
    labels = manifest["labels"]
    assert labels and len(labels) == len(set(labels)) == manifest["model"]["num_labels"]
    assert set(labels) <= set(LEXNAMES)


def test_output_shapes(manifest, model, tok):
    emb, logits = run(model, tok, ["a small domesticated carnivore", "to move fast"])
    assert emb.shape == (2, manifest["embedding_dim"])
    assert logits.shape == (2, len(manifest["labels"]))
    assert torch.isfinite(emb).all() and torch.isfinite(logits).all()


def test_tokenizer_does_not_pad(tok):
    assert tok.padding is None
    assert len(tok.encode("hello").ids) == 3  # [CLS] hello [SEP]


def test_paraphrase_closer_than_unrelated(model, tok):
    emb, _ = run(
        model,
        tok,
        [
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "The stock market fell sharply today.",
        ],
    )
    e = torch.nn.functional.normalize(emb, dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1
