"""The bundle's WordNet topic head: a linear layer fitted on the frozen student's raw pooled
embeddings of training-synset glosses (the recipe the model card reports: full-batch AdamW,
--head-epochs epochs, lr 1e-2), as an `aft.head` `LinearHead` for `aft.head.output.with_head`."""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F

from aft.distill.monitor import embed_raw
from aft.distill.teacher import MAX_SEQ_LEN, load_tokenizer
from aft.encoder import AFTEncoder
from aft.head.fit import LinearHead


def fit_topic_head(model: AFTEncoder, args, log: dict) -> tuple[list[str], LinearHead]:
    """The 45 WordNet lexicographer files as labels, and the head fitted on --head-max glosses;
    adds the fit's summary to `log`."""
    from aft.distill.corpus import LEXNAMES, load

    tok = load_tokenizer(MAX_SEQ_LEN)
    train = [r for r in load(args.corpus / "train.jsonl") if r["kind"] == "definition"]
    # A random subset: encoding all 105k glosses on 2 shared cores takes too long for little gain.
    random.Random(args.seed).shuffle(train)
    train = train[: args.head_max]
    labels = sorted(LEXNAMES)  # all 45, whichever the subset happens to contain
    t0 = time.time()
    x = embed_raw(model, [e.ids for e in tok.encode_batch([r["text"] for r in train])])
    y = torch.tensor([labels.index(r["lexname"]) for r in train])
    head = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(args.head_epochs):  # full-batch: 100k x 384 fits easily
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (head(x).argmax(-1) == y).float().mean().item()
    print(f"head: {len(labels)} labels, train acc {acc:.3f}, {time.time() - t0:.0f}s", flush=True)
    log["head"] = {"labels": len(labels), "train_glosses": len(train), "train_acc": acc}
    return labels, LinearHead(head.weight.detach().clone(), head.bias.detach().clone())
