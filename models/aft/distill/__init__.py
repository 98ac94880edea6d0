"""Distillation of all-MiniLM-L6-v2 into the `aft-mini` AFT encoder (corpus, teacher, training)."""
