"""tickettune: LoRA + curriculum fine-tuning of sentence-embedding models for IT tickets."""

__version__ = "0.1.0"
