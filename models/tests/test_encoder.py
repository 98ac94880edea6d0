"""AFTEncoder: shapes, batch invariance, TorchScript equality, pooling, heads."""

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from aft.encoder import VARIANTS, AFTEncoder, EncoderConfig


def config(variant, **kw):
    base = dict(vocab_size=50, d_model=32, n_layers=2, d_ff=64, max_len=40, variant=variant)
    base.update(window=4, n_heads=4, kernel_size=5, bias_rank=8)
    base.update(kw)
    return EncoderConfig(**base)


def batch(lengths, T=None, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_batch_invariance_and_script(variant, causal):
    torch.manual_seed(0)
    model = AFTEncoder(config(variant, causal=causal, num_labels=3)).eval()
    with torch.no_grad():  # livelier than the init, so the test can see differences
        for p in model.parameters():
            p.normal_(0, 0.3)
    ids, mask = batch([17, 9, 1, 30])
    emb, logits = model(ids, mask)
    assert emb.shape == (4, 32) and logits.shape == (4, 3)
    for i, n in enumerate([17, 9, 1, 30]):
        alone, alone_logits = model(ids[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(alone[0], emb[i], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(alone_logits[0], logits[i], rtol=1e-6, atol=1e-6)
    scripted = torch.jit.script(model)
    s_emb, s_logits = scripted(ids, mask)
    torch.testing.assert_close(s_emb, emb, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s_logits, logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scripted.encode(ids, mask), F.normalize(emb, dim=-1))


def test_no_head_projection_and_factorised_embedding():
    cfg = config("local", embedding_dim=24, token_embedding_dim=8)
    model = AFTEncoder(cfg).eval()
    assert model.token_embedding.weight.shape == (50, 8)
    assert model.token_projection.weight.shape == (32, 8)
    emb, logits = model(*batch([5, 3]))
    assert emb.shape == (2, 24) and logits.shape == (2, 0)
    assert not any(k.startswith("head") for k in model.state_dict())
    assert asdict(cfg)["token_embedding_dim"] == 8


def test_cls_pooling_and_normalize_flag():
    model = AFTEncoder(config("simple", pooling="cls", normalize=False)).eval()
    ids, mask = batch([6, 4])
    emb, _ = model(ids, mask)
    torch.testing.assert_close(model.encode(ids, mask), emb)
    with torch.no_grad():
        x = model.token_projection(model.token_embedding(ids))
        for block in model.blocks:
            x = block(x, mask > 0)
        torch.testing.assert_close(emb, model.ln_f(x)[:, 0])


@pytest.mark.parametrize("causal", [False, True])
def test_decay_long_batch_invariance_and_script(causal):
    """AFT-decay past one chunk (64): 300 and 170 tokens in one padded batch, alone, scripted.
    Its max_len is only a stated limit (no parameter depends on it): 65,536 costs nothing."""
    torch.manual_seed(0)
    model = AFTEncoder(config("decay", causal=causal, max_len=65536)).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in AFTEncoder(config("decay", causal=causal)).parameters()
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        ids, mask = batch([300, 170])
        emb, _ = model(ids, mask)
        alone, _ = model(ids[1:, :170], mask[1:, :170])
        torch.testing.assert_close(alone[0], emb[1], rtol=1e-6, atol=1e-6)
        s_emb, _ = torch.jit.script(model)(ids, mask)
    torch.testing.assert_close(s_emb, emb, rtol=1e-6, atol=1e-6)


def test_decay_rates_positive_and_spread():
    model = AFTEncoder(config("decay", n_heads=4))
    rates = model.blocks[0].attn.rates()
    assert (rates > 0).all() and torch.allclose(rates, 2.0 ** -torch.tensor([1.0, 4.0, 7.0, 10.0]))
    with torch.no_grad():
        model.blocks[0].attn.decay.fill_(-50.0)  # softplus keeps even this positive
    assert (model.blocks[0].attn.rates() > 0).all()


def test_too_long_and_bad_config():
    model = AFTEncoder(config("full"))
    with pytest.raises(ValueError):
        model(*batch([41]))
    with pytest.raises(ValueError):
        config("sparse")
    with pytest.raises(ValueError):
        config("conv", kernel_size=4)
    with pytest.raises(ValueError):
        config("decay", n_heads=5)  # d_model 32


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embed_spans_pools_parts_of_one_pass(pooling):
    """embed_spans: forward's outputs, plus per span the mean of the final token states over its
    positions through the output projection (mean pooling whatever the model's pooling), in
    eager and TorchScript alike; batch rows do not leak into each other's spans."""
    torch.manual_seed(0)
    cfg = config("decay", pooling=pooling, embedding_dim=24, num_labels=2)
    model = AFTEncoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    ids, mask = batch([30, 12])
    spans = torch.tensor([[0, 0, 10], [0, 5, 30], [1, 3, 12], [0, 29, 30]])
    scripted = torch.jit.script(model)
    with torch.no_grad():
        emb, logits = model(ids, mask)
        states = model.token_states(ids, mask)
        want = torch.stack([model.proj(states[r, s:e].mean(0)) for r, s, e in spans.tolist()])
        for m in (model, scripted):
            got_emb, got_logits, got = m.embed_spans(ids, mask, spans)
            torch.testing.assert_close(got_emb, emb)
            torch.testing.assert_close(got_logits, logits)
            torch.testing.assert_close(got, want)
        # Row 1 alone gives its span the same vector: padding and other rows do not matter.
        alone = model.embed_spans(ids[1:, :12], mask[1:, :12], torch.tensor([[0, 3, 12]]))[2]
        torch.testing.assert_close(alone[0], want[2], rtol=1e-5, atol=1e-5)
        empty = model.embed_spans(ids, mask, torch.zeros(0, 3, dtype=torch.long))[2]
        assert empty.shape == (0, 24)
    for bad in ([[0, 5, 5]], [[2, 0, 1]], [[0, 0, 31]]):
        with pytest.raises(Exception, match="span outside"):
            scripted.embed_spans(ids, mask, torch.tensor(bad))


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("key_scale", [1.0, 100.0])
def test_decay_sliced_long_pass_gives_the_whole_sequence_outputs(norm, causal, key_scale):
    """A long input runs slice by slice (slice_tokens, whole chunks; chunks of 128 here): the
    same embeddings, logits and span vectors as the whole sequence at once, eager and
    scripted, for a padded batch whose short rows leave whole slices empty. key_scale 100
    spreads the keys so that hundreds of rows underflow and take the exact fallback."""
    torch.manual_seed(0)
    cfg = dict(causal=causal, norm=norm, embedding_norm=norm == "post", max_len=65536)
    sliced = AFTEncoder(config("decay", slice_tokens=300, num_labels=3, **cfg)).eval()
    whole = AFTEncoder(config("decay", slice_tokens=0, num_labels=3, **cfg)).eval()
    with torch.no_grad():
        for p in sliced.parameters():
            p.normal_(0, 0.3)
        for b in sliced.blocks:
            b.attn.to_k.weight.mul_(key_scale)
    whole.load_state_dict(sliced.state_dict())
    assert sliced.sliced and not whole.sliced
    ids, mask = batch([1000, 700, 100])  # slices of 256 (2 chunks): [0, 256) ... [768, 1000)
    spans = torch.tensor([[0, 0, 256], [0, 250, 900], [1, 600, 700], [2, 1, 99]])
    with torch.no_grad():
        expected = whole.embed_spans(ids, mask, spans)
        for model in (sliced, torch.jit.script(sliced)):
            for got, want in zip(model.embed_spans(ids, mask, spans), expected, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        short, _ = sliced(ids[2:, :100], mask[2:, :100])  # under slice_tokens: not sliced
    torch.testing.assert_close(short[0], expected[0][2], rtol=1e-5, atol=1e-5)
