"""The committed bundles (aft-mini, aft-base; aft-mini carries an int8 copy, manifest
`int8_model`): manifest against files, dimensions, labels, a sanity check; and each int8 copy
against its bundle's float model."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from aft.distill.corpus import LEXNAMES
from tokenizers import Tokenizer

MODELS = Path(__file__).resolve().parents[1]
# Each bundle, the file of its int8 copy (None: not shipped), the blocks it has and its size
# limit (float16 weights: the converted MiniLM holds twice aft-mini's parameters; aft-mini holds
# its float and int8 models).
FAMILIES = {
    "aft-mini": ("model-int8.pt", 4, 48 * 1024 * 1024),
    "aft-base": (None, 6, 64 * 1024 * 1024),
}
BUNDLES = list(FAMILIES)
MAX_BYTES = {n: limit for n, (_, _, limit) in FAMILIES.items()}
WITH_INT8 = [n for n, (i, _, _) in FAMILIES.items() if i]


@pytest.fixture(scope="module", params=BUNDLES)
def bundle(request) -> Path:
    return MODELS / request.param


@pytest.fixture(scope="module")
def manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def load(bundle: Path, file: str = "model.pt"):
    torch.set_num_threads(2)
    return torch.jit.load(str(bundle / file), map_location="cpu").float().eval()


@pytest.fixture(scope="module")
def model(bundle):
    return load(bundle)


@pytest.fixture(scope="module")
def tok(bundle):
    return Tokenizer.from_file(str(bundle / "tokenizer.json"))


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


def test_files_match_manifest(bundle, manifest):
    listed = set(manifest["files"])
    on_disk = {p.name for p in bundle.iterdir()} - {"manifest.json", "MODEL_CARD.md"}
    assert listed == on_disk
    for name, entry in manifest["files"].items():
        data = (bundle / name).read_bytes()
        assert len(data) == entry["size"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name


def test_library_validates_manifest(bundle):
    from aft.bundle import load_manifest

    m = load_manifest(bundle)
    assert m["name"] == bundle.name
    assert m["int8_model"] == FAMILIES[bundle.name][0]  # the int8 copy each bundle ships, or None


def test_fields(bundle, manifest):
    assert manifest["format_version"] == 1
    assert manifest["name"] == bundle.name
    assert manifest["dtype"] == "float16"
    config = manifest["model"]  # embedding_dim null: the output is d_model wide
    assert (config["embedding_dim"] or config["d_model"]) == manifest["embedding_dim"] == 384
    assert manifest["max_seq_len"] == manifest["model"]["max_len"]
    assert (bundle / "MODEL_CARD.md").is_file()


def test_total_size(bundle):
    assert sum(p.stat().st_size for p in bundle.iterdir()) <= MAX_BYTES[bundle.name]


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


@pytest.mark.parametrize("float_name", WITH_INT8)
def test_int8_copy_quantizes_the_blocks_and_stays_close_to_its_float_model(float_name):
    from aft.bundle import load_scripted

    int8_file, blocks, _ = FAMILIES[float_name]
    float_model, int8_model = load(MODELS / float_name), load(MODELS / float_name, int8_file)
    # aft.bundle loads the same file for precision "int8" (the manifest's int8_model).
    assert load_scripted(MODELS / float_name, "int8").state_dict().keys() == (
        int8_model.state_dict().keys()
    )
    assert not any(m.original_name == "LinearPackedParams" for m in float_model.modules())
    packed = [m for m in int8_model.modules() if m.original_name == "LinearPackedParams"]
    assert len(packed) == blocks * 6  # per block q, k, v, out, 2 FFN; proj and head stay float
    assert "head.weight" in {n for n, _ in int8_model.named_parameters()}
    tok = Tokenizer.from_file(str(MODELS / float_name / "tokenizer.json"))
    texts = ["A man is playing a guitar.", "Restart the daemon after editing its config file."]
    (f_emb, f_logits), (q_emb, q_logits) = run(float_model, tok, texts), run(int8_model, tok, texts)
    cos = torch.nn.functional.cosine_similarity(f_emb, q_emb)
    assert (cos > 0.99).all() and (cos < 0.99999).all(), cos
    assert (f_logits.argmax(-1) == q_logits.argmax(-1)).all()
