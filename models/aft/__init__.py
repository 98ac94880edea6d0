"""Attention Free Transformer (AFT) model library for aft-serve.

aft.functional: the four AFT operations; aft.modules: layers; aft.encoder: the sentence encoder;
aft.export / aft.bundle / aft.reference: TorchScript bundles (docs/bundle-format.md).
"""
