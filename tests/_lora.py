"""A LoRA adapter on the tiny test model, saved the way `tickettune train` saves OUT/model (search and export tests)."""

from __future__ import annotations

from pathlib import Path


def build_adapter(base: Path, folder: Path, seed: int = 0) -> Path:
    """Save `base` plus a random LoRA adapter (r=4 on query/value) as a sentence-transformers folder."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(str(base), device="cpu")
    # Random B as well as A (init_lora_weights=False): a fresh adapter would leave the embeddings unchanged.
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    model.save(str(folder))
    return folder
