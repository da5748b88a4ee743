"""Similarity of texts under a model, each distinct text encoded once, and what counts as a similar pair.

A leaf of the package: stages (pairs, search, train, evaluate) and the report import it, it imports none of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIMILAR = 0.5  # a pair label at or above this is a similar pair (binary metrics, MNRL/triplet positives)


def encode_texts(model, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> dict[str, np.ndarray]:
    """Unit-length embeddings of each distinct text, encoded once (tickets recur across pairs)."""
    unique = sorted(set(texts))
    vectors = model.encode(unique, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=show_progress)
    return dict(zip(unique, vectors))


def pair_scores(model, pairs: pd.DataFrame, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Cosine similarity of each pair's two texts."""
    vectors = encode_texts(model, list(pairs["text1"]) + list(pairs["text2"]), batch_size, show_progress)
    a = np.stack([vectors[t] for t in pairs["text1"]])
    b = np.stack([vectors[t] for t in pairs["text2"]])
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def binary(labels: np.ndarray) -> np.ndarray:
    """1 for similar pairs (label >= SIMILAR), 0 for the others."""
    return (np.asarray(labels, dtype=float) >= SIMILAR).astype(int)
