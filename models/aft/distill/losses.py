"""The distillation losses: sentence vectors against the teacher's (`distill_loss`), long
documents pooled by section and whole (`document_loss`), and texts left out of a document finding
their window (`context_loss`). The training command's module doc (aft.distill.options) says
which batches use which."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aft.distill.documents import pool_sections
from aft.encoder import AFTEncoder

# Softmax temperature of the context loss: cosines of 0.05 apart are e-fold apart in odds.
CONTEXT_TEMPERATURE = 0.05


def distill_loss(raw: torch.Tensor, target: torch.Tensor, rel_weight: float) -> torch.Tensor:
    """1 - cos(student, teacher) on L2-normalised vectors, plus rel_weight x the mean squared
    error between the two in-batch cosine matrices (the pairwise geometry is what similarity
    search and the Spearman metric consume)."""
    s = F.normalize(raw, dim=-1)
    cos = (1.0 - (s * target).sum(-1)).mean()
    rel = F.mse_loss(s @ s.T, target @ target.T)
    return cos + rel_weight * rel


def document_loss(model: AFTEncoder, batch, args) -> torch.Tensor:
    """Late-chunking and whole-document loss on one batch of long documents: each section pooled
    from the whole-document pass against the teacher's vector of the section alone, and the
    document's pooled vector against the teacher's token-weighted mean of its sections."""
    x = model.token_states(batch.input_ids, batch.attention_mask)  # (B, T, d_model)
    doc, _ = model._outputs(x, batch.attention_mask > 0)  # (B, 384)
    sections = pool_sections(x.float(), batch.section_of, len(batch.section_targets))
    section_raw = model.proj(sections)  # (S, 384)
    doc_cos = (1.0 - (F.normalize(doc.float(), dim=-1) * batch.doc_targets).sum(-1)).mean()
    loss = distill_loss(section_raw.float(), batch.section_targets, args.rel_weight) + doc_cos
    if args.context_weight > 0:
        loss = loss + args.context_weight * context_loss(model, x, batch)
    return loss


def context_loss(model: AFTEncoder, states: torch.Tensor, batch) -> torch.Tensor:
    """Cross-entropy of each query's right window among all windows of the batch, scored by the
    cosine of the teacher's query vector to each window pooled from the whole-document pass (the
    service's late-chunk vector): what chunk-alone embedding cannot see, this loss rewards."""
    if len(batch.query_window) == 0:
        return states.new_zeros(())
    windows = model.proj(pool_sections(states.float(), batch.window_of, batch.windows))
    scores = batch.query_targets @ F.normalize(windows.float(), dim=-1).T  # (Q, windows)
    return F.cross_entropy(scores / CONTEXT_TEMPERATURE, batch.query_window)
