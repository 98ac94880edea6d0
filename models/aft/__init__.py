"""Attention Free Transformer (AFT) model library for aft-serve.

aft.functional: the AFT operations, one per variant (aft.decay: AFT-decay's chunked scan;
aft.numerics: what they share); aft.modules: layers; aft.encoder: the sentence encoder;
aft.export / aft.bundle / aft.reference: TorchScript bundles (docs/bundle-format.md).
"""
