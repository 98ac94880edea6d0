"""Write the new bundle: the base encoder with the trained head, exported in the bundle format
(docs/bundle-format.md), checked, then moved into place, so a failure never leaves a half-written
bundle where the service could pick it up."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from aft.bundle import load_manifest
from aft.encoder import AFTEncoder, EncoderConfig
from aft.export import MANIFEST, export_bundle
from aft.head.embed import load_tokenizer, logits, tokenize
from aft.head.errors import HeadError
from aft.head.fit import LinearHead


def with_head(base: AFTEncoder, num_labels: int, head: LinearHead | None = None) -> AFTEncoder:
    """The base encoder rebuilt with a num_labels head (the base's own head, if any, dropped)."""
    cfg = asdict(base.config)
    cfg["num_labels"] = num_labels
    model = AFTEncoder(EncoderConfig(**cfg))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"head.weight", "head.bias"}:
        raise RuntimeError(f"rebuilding the encoder: missing {missing}, unexpected {unexpected}")
    if head is not None:
        with torch.no_grad():
            model.head.weight.copy_(head.weight)
            model.head.bias.copy_(head.bias)
    return model.eval()


def stored_copy(model: AFTEncoder, dtype: str) -> AFTEncoder:
    """The model with its parameters rounded as the bundle stores them, back in float32: what
    the service will run, so the reported scores are the served model's."""
    cfg = EncoderConfig(**asdict(model.config))
    out = AFTEncoder(cfg)
    store = getattr(torch, dtype)
    state = model.state_dict()
    out.load_state_dict(
        {k: v.to(store).float() if v.is_floating_point() else v for k, v in state.items()}
    )
    return out.eval()


def check_out_dir(out: Path, base_dir: Path, overwrite: bool) -> None:
    """Fail before any work if the bundle cannot be written where asked."""
    if out.resolve() == base_dir.resolve():
        raise HeadError(f"--out {out} is the base bundle itself; write the new one elsewhere")
    if out.exists():
        if not out.is_dir():
            raise HeadError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            if not overwrite:
                raise HeadError(f"--out {out} exists and is not empty; pass --overwrite to replace")
            if not (out / MANIFEST).is_file():
                raise HeadError(
                    f"--out {out} is not a bundle (no {MANIFEST}); refusing to replace it even "
                    f"with --overwrite"
                )
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HeadError(f"--out {out}: cannot create {parent} ({e.strerror or e})") from None


def write_bundle(
    model: AFTEncoder,
    base_dir: Path,
    out: Path,
    *,
    name: str,
    labels: list[str],
    dtype: str,
    description: str,
    model_card: str,
    check_texts: list[str],
    overwrite: bool,
) -> dict:
    """Export into a temporary sibling of `out`, verify it, then move it into place; returns
    the new manifest."""
    check_out_dir(out, base_dir, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    try:
        # mkdtemp makes it private (0700); a bundle is read by the service's own user.
        tmp.chmod(0o777 & ~_umask())
        export_bundle(model, base_dir / "tokenizer.json", tmp, name, labels, dtype, description)
        (tmp / "MODEL_CARD.md").write_text(model_card)
        manifest = load_manifest(tmp)
        _check_served_logits(tmp, manifest, stored_copy(model, dtype), check_texts)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        return manifest
    except OSError as e:
        raise HeadError(f"writing {out}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_served_logits(
    bundle: Path, manifest: dict, expected: AFTEncoder, texts: list[str]
) -> None:
    """The written model.pt and tokenizer.json, loaded as the service loads them, give the
    logits the reported scores were computed with."""
    if not texts:
        return
    tok = load_tokenizer(bundle, manifest["max_seq_len"])
    seqs, _ = tokenize(tok, texts)
    served = torch.jit.load(str(bundle / "model.pt"), map_location="cpu").float().eval()
    got = logits(served, seqs, manifest["pad_token_id"])
    want = logits(expected, seqs, manifest["pad_token_id"])
    err = (got - want).abs().max().item()
    if err > 1e-3 * (1.0 + want.abs().max().item()):
        raise RuntimeError(f"the written model's logits differ from the trained head's by {err}")
