"""LoRA adapters (peft) on a sentence-transformers encoder: which modules to adapt, per architecture."""

from __future__ import annotations

from tickettune.core.errors import UserError
from tickettune.training.config import TrainConfig

# LoRA targets by architecture (config.model_type); anything else is treated as BERT-style.
LORA_TARGETS = {
    "mpnet": ["attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense", "output.dense"],
    "bert": ["query", "key", "value", "dense"],
}


def lora_targets(model) -> list[str]:
    """The modules LoRA adapts for this architecture (config.model_type)."""
    model_type = getattr(model.transformers_model.config, "model_type", "")
    return LORA_TARGETS.get(model_type, LORA_TARGETS["bert"])


def add_lora(model, config: TrainConfig) -> tuple[int, int]:
    """Add a LoRA adapter (peft) to the transformer; returns (trainable, total) parameter counts."""
    from peft import LoraConfig

    targets = config.lora_target_modules or lora_targets(model)
    names = [n for n, _ in model.transformers_model.named_modules()]
    # The pooler is unused by mean pooling; adapting it would only add dead parameters (and stall DDP).
    exclude = ["pooler.dense"] if any(n.endswith("pooler.dense") for n in names) else None
    if not any(n == t or n.endswith(f".{t}") for t in targets for n in names):
        raise UserError(f"lora_target_modules {targets} match no module of {config.model_name}; "
                        f"name some of its modules (e.g. {', '.join(n.rsplit('.', 1)[-1] for n in names[-3:])})")
    # peft annotates lora_alpha as int, but scales by lora_alpha / r as a float, so a fractional alpha works.
    model.add_adapter(LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
                                 lora_dropout=config.lora_dropout, target_modules=targets, exclude_modules=exclude))
    return parameter_counts(model)


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
