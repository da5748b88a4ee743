"""Encoder vectors kept on disk, keyed by the encoder and the text, so that each ticket is encoded once across runs.

Encoding is what a CPU pays for: on 2 cores all-MiniLM-L6-v2 encodes ~100 tickets a second, so the 38,000
tickets of an IT export cost ~6 minutes, and a recipe that re-encoded them for every run, evaluation and head
epoch could afford only a sample. Work that needs the frozen encoder once per ticket (the head stage of
`train`, its evaluations, the final judgement) reads vectors from here instead.

    >>> from tickettune.core.vector_cache import CachedEncoder
    >>> encoder = CachedEncoder.for_model(model, "all-MiniLM-L6-v2")        # doctest: +SKIP
    >>> vectors = encoder.encode(["vpn drops every hour"])                   # doctest: +SKIP  (encoded, stored)
    >>> vectors = encoder.encode(["vpn drops every hour"])                   # doctest: +SKIP  (read back)

Layout: ROOT/KEY/shard-*.npz, each shard holding `digests` (sha256 of each exact text, 32 bytes) and `vectors`
(float32, unit length). KEY is a sha256 over the encoder's files (every safetensors and json file of the model
folder, by content hash), its max_seq_length and FORMAT: changed weights, another model or another truncation
give another key, so stale vectors are never served. A changed text has another digest and is encoded anew.
New vectors go to a new shard written atomically (temporary file, then rename), so two runs writing at once
never corrupt each other, and an interrupted run loses only its unwritten vectors. numpy's .npz is used
rather than a database: the whole key's vectors are read at once (58 MB for 38,000 MiniLM vectors), and
nothing else is asked of the store.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FORMAT = "tickettune-vectors-1"
DEFAULT_ROOT = Path("~/.cache/tickettune/vectors")
ENV_ROOT = "TICKETTUNE_VECTOR_CACHE"  # where the cache lives when no folder is named (tests point it at a tmp dir)


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the content hashes of a model folder's weights and configuration files (two levels deep).

    Not models.model_fingerprint (size and mtime of every file): vectors outlive an index and are shared by
    copies of a model folder, so the key is the content."""
    from tickettune.core.models import file_sha256

    digest = hashlib.sha256()
    files = sorted(p for pattern in ("*.safetensors", "*.json", "*/*.safetensors", "*/*.json")
                   for p in folder.glob(pattern) if p.is_file())
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}={file_sha256(path)}\n".encode())
    return digest.hexdigest()


def encoder_key(model_name: str, max_seq_length: int) -> str:
    """The cache key of a model (a folder or a name `models.resolve_model` finds) read at `max_seq_length` tokens."""
    from tickettune.core.models import resolve_model

    fingerprint = folder_fingerprint(resolve_model(model_name))
    return hashlib.sha256(f"{FORMAT}|{fingerprint}|{max_seq_length}".encode()).hexdigest()[:32]


def cache_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get(ENV_ROOT) or DEFAULT_ROOT).expanduser()


class VectorCache:
    """The stored vectors of one encoder (one KEY folder): look texts up, add new ones.

        >>> cache = VectorCache(Path("/tmp/vectors"), "0f3a...")     # doctest: +SKIP
        >>> found = cache.lookup(["a", "b"])                          # doctest: +SKIP
        >>> found[0] is None                                          # doctest: +SKIP  (not encoded yet)
    """

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / key
        self._rows: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._rows is None:
            self._rows = {}
            for shard in sorted(self.folder.glob("shard-*.npz")):
                try:
                    with np.load(shard) as data:
                        digests, vectors = data["digests"], data["vectors"]
                except (OSError, ValueError, KeyError):  # a damaged shard is ignored: its texts are encoded again
                    continue
                self._rows.update(zip((bytes(d) for d in digests), vectors))
        return self._rows

    def __len__(self) -> int:
        return len(self._load())

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        rows = self._load()
        return [rows.get(text_digest(t)) for t in texts]

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store the vectors of `texts` (one row each) in a new shard."""
        if not len(texts):
            return
        digests = np.frombuffer(b"".join(text_digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
        vectors = np.asarray(vectors, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.npz"
        partial = self.folder / f".{name}.partial"
        with open(partial, "wb") as handle:
            np.savez(handle, digests=digests, vectors=vectors)
        os.replace(partial, self.folder / name)
        self._load().update(zip((bytes(d) for d in digests), vectors))


class CachedEncoder:
    """A SentenceTransformer's unit vectors through a VectorCache: `encode` takes the keyword arguments of
    `SentenceTransformer.encode` that tickettune passes and encodes only the texts the cache lacks.

    Takes the loaded model, and the name or folder it was loaded from (for the key); `root` defaults to
    $TICKETTUNE_VECTOR_CACHE or ~/.cache/tickettune/vectors. `encoded` counts the texts this encoder had to
    encode (the rest came from disk), so a run can say what the cache saved.
    """

    def __init__(self, model, cache: VectorCache) -> None:
        self.model = model
        self.cache = cache
        self.encoded = 0
        self.reused = 0

    @classmethod
    def for_model(cls, model, model_name: str, root: str | Path | None = None) -> "CachedEncoder":
        return cls(model, VectorCache(cache_root(root), encoder_key(model_name, int(model.max_seq_length))))

    def encode(self, texts: Iterable[str], batch_size: int = 64, show_progress_bar: bool = False,
               **_ignored) -> np.ndarray:
        """Unit vectors of `texts` (rows in order, float32). Other SentenceTransformer.encode arguments are accepted
        and ignored: vectors here are always normalised numpy rows."""
        texts = list(texts)
        found = self.cache.lookup(texts)
        missing = sorted({t for t, v in zip(texts, found) if v is None})
        fresh: dict[str, np.ndarray] = {}
        if missing:
            new = self.model.encode(missing, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=show_progress_bar)
            self.cache.add(missing, new)
            fresh = dict(zip(missing, new))
        vectors = [fresh[t] if v is None else v for t, v in zip(texts, found)]
        self.encoded += len(missing)
        self.reused += len(set(texts)) - len(missing)
        dim = int(self.model.get_embedding_dimension() or 0)
        return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
