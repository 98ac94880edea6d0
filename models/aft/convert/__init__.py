"""Convert a pretrained BERT-family sentence encoder into an AFT encoder (`python -m aft.convert`).

Everything in a BERT layer but the attention's token mixing carries over: token embeddings,
LayerNorms, feed-forward layers, the value and output projections. Each softmax attention becomes
an AFT-decay mixer initialised from the layer's query, key, value and output projections, and the
absolute position embeddings' role passes to the decay bias, so the result runs at any length in
linear time and memory. Two stages then teach the mixers the teacher's behaviour:

1. align (`aft.convert.stages.align`): each layer's mixer learns to reproduce that layer's
   attention output on the teacher's own hidden states; local losses, the rest frozen;
2. distil (`aft.convert.stages.distil`): all weights end to end against the teacher run on the same
   batch: its sentence vectors (`aft.distill.losses.distill_loss`), its hidden states layer by
   layer, and long documents (late chunking, `aft.distill.documents`).

Modules: `source` reads the teacher's folder, `build` makes and initialises the AFT encoder,
`texts` the training texts with their lazily computed teacher labels, `stages` the two training
stages, `__main__` the command line (resumable, exports the bundle and its int8 copy).
"""
