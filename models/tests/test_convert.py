"""aft.convert on a tiny random BERT that this test writes as a sentence-transformers folder:
the weights land where they belong, stage 1 brings the mixers closer to the attention they
replace, the command resumes, and the exported bundle runs as TorchScript."""

import json
import random

import pytest
import torch
from aft.bundle import load_manifest, load_scripted
from aft.convert.__main__ import main
from aft.convert.build import convert, layer_means
from aft.convert.source import SourceError, read_source
from aft.convert.stages import relative_error
from aft.head.embed import pad
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

WORDS = (
    "the a cat dog sat ran on under mat rug house garden red blue small big quickly slowly "
    "and but then she he they saw found kept old new river hill town letter friend"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
D, LAYERS, HEADS, FF = 32, 2, 4, 64


def write_tokenizer(path):
    vocab = {
        w: i
        for i, w in enumerate(SPECIAL + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"])
    }
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    tok.save(str(path))
    return len(vocab)


def write_bert(folder, seed=0):
    """A random BERT (post-LayerNorm, absolute positions, GELU) in sentence-transformers form."""
    folder.mkdir()
    vocab = write_tokenizer(folder / "tokenizer.json")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    sd = {
        "embeddings.word_embeddings.weight": rnd(vocab, D, std=1.0),
        "embeddings.position_embeddings.weight": rnd(64, D),
        "embeddings.token_type_embeddings.weight": rnd(2, D),
        "embeddings.LayerNorm.weight": 1 + rnd(D, std=0.1),
        "embeddings.LayerNorm.bias": rnd(D, std=0.1),
    }
    shapes = {
        "attention.self.query": (D, D),
        "attention.self.key": (D, D),
        "attention.self.value": (D, D),
        "attention.output.dense": (D, D),
        "intermediate.dense": (FF, D),
        "output.dense": (D, FF),
    }
    for i in range(LAYERS):
        for name, (o, n) in shapes.items():
            sd[f"encoder.layer.{i}.{name}.weight"] = rnd(o, n, std=n**-0.5)
            sd[f"encoder.layer.{i}.{name}.bias"] = rnd(o, std=0.05)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"encoder.layer.{i}.{ln}.weight"] = 1 + rnd(D, std=0.1)
            sd[f"encoder.layer.{i}.{ln}.bias"] = rnd(D, std=0.1)
    save_file(sd, str(folder / "model.safetensors"))
    config = {
        "model_type": "bert", "hidden_size": D, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "intermediate_size": FF, "vocab_size": vocab,
        "max_position_embeddings": 64, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "pad_token_id": 0,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    (folder / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(modules)
    ]))  # fmt: skip
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


def write_texts(path, n=240, seed=0):
    rng = random.Random(seed)
    path.write_text(
        "".join(" ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + "\n" for _ in range(n))
    )
    return path


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_bert(tmp_path_factory.mktemp("src") / "tiny-bert")


def batch(texts_path, tok_path, n=16):
    tok = Tokenizer.from_file(str(tok_path))
    lines = texts_path.read_text().splitlines()[:n]
    return pad([e.ids for e in tok.encode_batch(lines)], 0)


def test_read_source_reads_pooling_and_normalize_and_refuses_other_models(bert, tmp_path):
    src = read_source(bert)
    assert (src.pooling, src.normalize, src.width, src.max_seq_len) == ("mean", True, D, 64)
    other = tmp_path / "other"
    other.mkdir()
    for f in ("model.safetensors", "tokenizer.json"):
        (other / f).write_bytes((bert / f).read_bytes())
    (other / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(SourceError, match="roberta"):
        read_source(other)


def test_converted_blocks_match_the_teacher_given_its_attention_output(bert, tmp_path):
    """Everything but the mixer is the BERT's: with the teacher's attention output put in the
    mixer's place, each converted block gives the teacher's layer output."""
    src = read_source(bert)
    teacher = src.teacher()
    ids, mask = batch(write_texts(tmp_path / "t.txt"), src.tokenizer)
    _, trace = teacher.trace(ids, mask)
    model = convert(src, teacher, HEADS, 1024, layer_means(trace, mask)).eval()
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            x = block.ln1(trace.inputs[i] + trace.mixed[i])
            y = block.ln2(x + block.ff(x))
            torch.testing.assert_close(y, trace.states[i], atol=1e-5, rtol=1e-4)
        # The embedding path: the teacher's input to layer 0 but for the position embeddings.
        emb = model.ln_embed(model.token_embedding(ids))
        assert emb.shape == trace.inputs[0].shape
        assert relative_error(emb, trace.inputs[0], mask) < 0.5


def test_convert_command_aligns_distils_resumes_and_exports_a_bundle(bert, tmp_path):
    texts = write_texts(tmp_path / "texts.txt")
    run, bundle = tmp_path / "run", tmp_path / "tiny-aft-base"
    args = ["--source", str(bert), "--texts", str(texts), "--out", str(run),
            "--align-steps", "40", "--align-lr", "3e-3", "--batch-size", "16", "--steps", "6",
            "--long-every", "3", "--long-tokens", "48", "--long-docs", "2", "--eval-steps", "3",
            "--threads", "1", "--max-seq-len", "4096"]  # fmt: skip
    main(args)
    align, distil = (torch.load(run / f"{s}.pt", weights_only=False) for s in ("align", "distil"))
    assert align["progress"]["step"] == 40 and distil["progress"]["step"] == 6

    # Stage 1 brought every mixer closer to its layer's attention output.
    src = read_source(bert)
    teacher = src.teacher()
    ids, mask = batch(texts, src.tokenizer, 32)
    _, trace = teacher.trace(ids, mask)
    model = convert(src, teacher, HEADS, 4096, layer_means(trace, mask)).eval()

    def errors():
        with torch.no_grad():
            return [
                relative_error(b.attn(trace.inputs[i], mask > 0), trace.mixed[i], mask).item()
                for i, b in enumerate(model.blocks)
            ]

    before = errors()
    model.load_state_dict(align["model"])
    after = errors()
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)

    # The same command again: both stages are done, nothing retrains.
    main(args)
    assert torch.load(run / "distil.pt", weights_only=False)["progress"]["step"] == 6
    # A larger stage-2 budget continues from the checkpoint, then exports.
    args[args.index("--steps") + 1] = "9"
    main(args + ["--export", str(bundle), "--int8"])
    assert torch.load(run / "distil.pt", weights_only=False)["progress"]["step"] == 9
    manifest = load_manifest(bundle)
    assert manifest["max_seq_len"] == 4096 and manifest["model"]["norm"] == "post"
    scripted = load_scripted(bundle)
    emb, _ = scripted(ids, mask)
    assert emb.shape == (ids.shape[0], D) and torch.isfinite(emb).all()
    assert (bundle / "model-int8.pt").exists()
    assert json.loads((bundle / "manifest.json").read_text())["int8_model"] == "model-int8.pt"


def test_leave_one_source_out_runs_share_stage_one_and_train_without_the_source(bert, tmp_path):
    """--align-only stops after stage 1; --align-from starts stage 2 from it; --exclude-source
    drops a source's texts (and nothing else); the evaluator reads the run as a LOSO run."""
    from aft.distill.evaluate import loso_run

    lines = write_texts(tmp_path / "plain.txt").read_text().splitlines()
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(
        json.dumps({"text": t, "source": "beta" if i % 3 == 0 else "alpha", "doc": f"d{i // 8}"})
        + "\n" for i, t in enumerate(lines)))  # fmt: skip
    common = ["--source", str(bert), "--texts", str(texts), "--align-steps", "4",
              "--batch-size", "16", "--long-every", "0", "--eval-steps", "2", "--threads", "1",
              "--max-seq-len", "512"]  # fmt: skip
    stage1 = tmp_path / "stage1"
    main(common + ["--out", str(stage1), "--exclude-source", "beta", "--align-only"])
    assert (stage1 / "align.pt").exists() and not (stage1 / "distil.pt").exists()

    runs = {}
    for name, exclude in (("all", ""), ("without-beta", "beta")):
        out = tmp_path / "loso" / name
        main(common + ["--out", str(out), "--exclude-source", exclude, "--align-from",
                       str(stage1), "--steps", "3", "--export", str(out / "bundle")])  # fmt: skip
        assert (out / "align.pt").read_bytes() == (stage1 / "align.pt").read_bytes()
        runs[name] = loso_run(out)
    (_, all_log), (model, without_log) = runs["all"], runs["without-beta"]
    assert all_log["sources"]["beta"] > 0 and "beta" not in without_log["sources"]
    assert without_log["sources"]["alpha"] == all_log["sources"]["alpha"]
    assert without_log["excluded"] == ["beta"] and without_log["steps"] == 3
    ids, mask = batch(texts.with_name("plain.txt"), read_source(bert).tokenizer, 4)
    assert model(ids, mask)[0].shape == (4, D)


def test_align_from_a_run_without_stage_one_is_refused(bert, tmp_path):
    with pytest.raises(SystemExit):
        main(["--source", str(bert), "--texts", str(write_texts(tmp_path / "t.txt")),
              "--out", str(tmp_path / "run"), "--steps", "1",
              "--align-from", str(tmp_path)])  # fmt: skip
