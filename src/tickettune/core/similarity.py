"""Similarity of texts: under a model (each distinct text encoded once), by TF-IDF and by word overlap, how wrong
a similarity is for a label (difficulty), and what counts as a similar pair.

A leaf of the package: stages (pairs, search, train, evaluate) and the report import it, it imports none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.models import DEFAULT_MODEL

SIMILAR = 0.5  # a pair label at or above this is a similar pair (binary metrics, MNRL/triplet positives)
DIFFICULTY_MAX_SEQ = 128  # tokens the untuned model reads when it scores difficulty


def encode_texts(model, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> dict[str, np.ndarray]:
    """Unit-length embeddings of each distinct text, encoded once (tickets recur across pairs)."""
    unique = sorted(set(texts))
    vectors = model.encode(unique, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=show_progress)
    return dict(zip(unique, vectors))


def pair_scores(model, pairs: pd.DataFrame, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Cosine similarity of each pair's two texts."""
    return pair_cosines(encode_texts(model, list(pairs["text1"]) + list(pairs["text2"]), batch_size, show_progress),
                        pairs)


def pair_cosines(vectors: dict[str, np.ndarray], pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity of each pair's two texts, from their unit vectors (as `encode_texts` returns them)."""
    a = np.stack([vectors[t] for t in pairs["text1"]])
    b = np.stack([vectors[t] for t in pairs["text2"]])
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def binary(labels: np.ndarray) -> np.ndarray:
    """1 for similar pairs (label >= SIMILAR), 0 for the others."""
    return (np.asarray(labels, dtype=float) >= SIMILAR).astype(int)


def tfidf_vectors(texts: Sequence[str]):
    """L2-normalised TF-IDF rows (a sparse matrix) for `texts`, fitted on them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        return TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32).fit_transform(texts)
    except ValueError:
        raise UserError("the texts hold no words at all; check the text columns") from None


def overlap_vectors(texts: Sequence[str]):
    """Words and word pairs with sublinear counts, unit length. Unlike TF-IDF, a text's vector does not depend on
    the other texts, so a near-duplicate score means the same in `pairs` and in `check`."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    matrix = HashingVectorizer(ngram_range=(1, 2), alternate_sign=False, norm=None,
                               token_pattern=r"(?u)\b\w+\b", dtype=np.float32).transform(texts)
    matrix.data = 1 + np.log(matrix.data)
    return normalize(matrix)


def near_duplicate_scores(queries: Sequence[str], references: Sequence[str], chunk: int = 2048) -> np.ndarray:
    """For each query text, its highest word-overlap cosine with any reference text (0 when there are none)."""
    if not len(queries) or not len(references):
        return np.zeros(len(queries))
    q, r = overlap_vectors(list(queries)), overlap_vectors(list(references)).T.tocsc()
    return np.concatenate([(q[i:i + chunk] @ r).max(axis=1).toarray().ravel() for i in range(0, len(queries), chunk)])


def pair_difficulty(labels: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """How wrong a similarity is for a label: 1 - sim for similar pairs, sim for dissimilar, |label - sim| between."""
    labels, similarity = np.asarray(labels, dtype=float), np.asarray(similarity, dtype=float)
    return np.where(labels >= 1, 1 - similarity, np.where(labels <= 0, similarity, np.abs(labels - similarity)))


def text_matrix(texts: Sequence[str], method: str = "model", model=DEFAULT_MODEL):
    """One unit-length row per text, for `row_similarity`: with `method` "model" a dense array (each distinct text
    encoded once by `model`, a name, a folder or a loaded SentenceTransformer, truncated to DIFFICULTY_MAX_SEQ
    tokens); with "tfidf" a sparse TF-IDF matrix, and no model."""
    if method == "tfidf":
        return tfidf_vectors(texts)
    from tickettune.core.models import load_model

    if isinstance(model, (str, Path)):
        model = load_model(str(model), DIFFICULTY_MAX_SEQ)
    vectors = encode_texts(model, list(texts))
    return np.stack([vectors[t] for t in texts]).astype(np.float32)


def row_similarity(matrix, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """Cosine of row pairs (rows are unit length), for a dense or a sparse matrix."""
    if hasattr(matrix, "multiply"):
        return np.asarray(matrix[rows_a].multiply(matrix[rows_b]).sum(axis=1)).ravel().astype(np.float64)
    return np.einsum("ij,ij->i", matrix[rows_a], matrix[rows_b]).astype(np.float64)
