"""The embedding index of a ticket set, cached on disk.

Each index holds the tickets' unit-length vectors and is kept under a cache folder, keyed by a fingerprint of
the model folder and a hash of the texts, so a changed model or a changed ticket file builds a new index and an
unchanged pair loads in moments. Each index keeps its builder's vectors of fixed probe texts
(`core.models.PROBE_TEXTS`), against which a query encoder (PyTorch or ONNX, `encoders.Encoder`) is checked.
Similarity is cosine (inner product of unit vectors): an exact scan (sentence-transformers' semantic_search) for
up to `EXACT_MAX_ROWS` tickets, a FAISS IVF index above.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from tickettune.core.errors import UserError
from tickettune.core.files import atomic_output_dir
from tickettune.core.models import model_fingerprint

# Above this many tickets a query scans more than ~300 MB of vectors (~10 ms here), so an
# approximate index pays for itself; benchmarks/search.py has the figures behind the choice.
EXACT_MAX_ROWS = 200_000
# IVF: about 4 * sqrt(n) k-means cells (at least 40 training vectors each), 32 cells searched per query.
# An HNSW graph (M=32) queried as fast in prototype runs here but took 812 s to build for 1M vectors, IVF 123 s.
IVF_CELLS_PER_SQRT = 4
IVF_TRAIN_PER_CELL = 40
IVF_PROBES = 32
INDEX_FORMAT = 2  # 2: probe.npy, the builder's vectors of core.models.PROBE_TEXTS, when the builder knew them
KEEP_INDEXES = 4
DEFAULT_CACHE_DIR = Path("~/.cache/tickettune/index")
BACKENDS = ("auto", "exact", "ivf")


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def choose_backend(n_rows: int, backend: str = "auto") -> str:
    """`exact` for small sets (or when faiss-cpu is missing), `ivf` for large ones; an explicit choice is kept."""
    if backend not in BACKENDS:
        raise UserError(f"index backend '{backend}' is unknown; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "ivf" if n_rows > EXACT_MAX_ROWS and faiss_available() else "exact"
    if backend == "ivf" and not faiss_available():
        raise UserError("the ivf index needs faiss-cpu, which is not installed; pip install 'tickettune[search]'")
    return backend


class VectorIndex:
    """Top-k cosine search over unit-length row vectors, a float32 array of shape (n_rows, dim).

    `exact` scans every row (sentence_transformers.util.semantic_search); `ivf` is a FAISS inverted-file index
    (inner-product metric): rows are filed under k-means cells and a query scans only the `n_probe` cells nearest to it,
    approximate but a small fraction of the work. `auto` picks by size (`choose_backend`).
    """

    def __init__(self, vectors: np.ndarray, backend: str = "auto", faiss_index=None, n_probe: int = IVF_PROBES,
                 probe: Optional[np.ndarray] = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"expected a non-empty 2-D array of vectors, got shape {vectors.shape}")
        self.vectors = vectors
        self._spare: Optional[np.ndarray] = None
        self.backend = choose_backend(len(vectors), backend)
        self.faiss_index = faiss_index if faiss_index is not None or self.backend == "exact" else self._build_ivf(vectors)
        self.n_probe = n_probe
        # The probe texts' vectors under the model that built the index (`encoders.Encoder.check_agrees`).
        self.probe = probe

    @staticmethod
    def _build_ivf(vectors: np.ndarray):
        import faiss

        n, dim = vectors.shape
        cells = max(1, min(int(IVF_CELLS_PER_SQRT * math.sqrt(n)), n // IVF_TRAIN_PER_CELL))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # k-means converges well enough for filing; 25 rounds would double the build
        sample = np.random.default_rng(0).choice(n, min(n, IVF_TRAIN_PER_CELL * cells), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        return index

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers of the `k` best rows for each query (shape (n_queries, dim)), best first.

        Fewer than `k` rows exist: the missing places hold score -inf and row -1.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"expected queries of dimension {self.vectors.shape[1]}, got {queries.shape[1]}")
        if k < 1:
            raise ValueError(f"expected k >= 1, got {k}")
        if self.backend == "ivf":
            self.faiss_index.nprobe = min(self.n_probe, self.faiss_index.nlist)
            scores, rows = self.faiss_index.search(queries, k)
            return np.where(rows < 0, -np.inf, scores), rows
        return self._exact(queries, k)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from sentence_transformers.util import dot_score, semantic_search

        with warnings.catch_warnings():
            # A cache-mapped index is read-only; torch shares its memory and only reads it.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            corpus = torch.from_numpy(self.vectors)
        hits = semantic_search(torch.from_numpy(queries), corpus, top_k=k, score_function=dot_score)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for query, found in enumerate(hits):
            rows[query, :len(found)] = [hit["corpus_id"] for hit in found]
            scores[query, :len(found)] = [hit["score"] for hit in found]
        return scores, rows

    def upsert(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Give `rows` these vectors: rows below len(self) are replaced, rows len(self), len(self)+1, ... appended.

        Only the given vectors change (nothing is re-encoded); IVF cells stay those trained on the first
        vectors, a new vector is filed under the nearest. Not safe beside a concurrent search: callers
        serialise the two.
        """
        rows = np.asarray(rows, dtype=np.int64)
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        n = len(self.vectors)
        new = rows >= n
        if len(rows) != len(vectors) or not np.array_equal(rows[new], np.arange(n, n + int(new.sum()))):
            raise ValueError(f"expected existing rows or rows numbered from {n} on, one per vector")
        if new.any():
            self._append(vectors[new])
        elif not self.vectors.flags.writeable:  # mapped read-only from the cache: change a private copy
            self.vectors = np.array(self.vectors)
        self.vectors[rows[~new]] = vectors[~new]
        if self.backend == "ivf":
            import faiss

            self.faiss_index.remove_ids(faiss.IDSelectorArray(rows[~new]))
            self.faiss_index.add_with_ids(vectors, rows)

    def _append(self, vectors: np.ndarray) -> None:
        # Rows go into spare room at the end of a larger buffer (grown by a quarter when full), so adding one
        # ticket to 100,000 copies nothing: `vectors` is a view of the buffer's first rows.
        n, dim = self.vectors.shape
        spare = self._spare
        if spare is None or len(spare) < n + len(vectors):
            spare = np.empty((max(n + n // 4, n + len(vectors), 1024), dim), np.float32)
            spare[:n] = self.vectors
            self._spare = spare
        spare[n:n + len(vectors)] = vectors
        self.vectors = spare[:n + len(vectors)]

    def save(self, folder: Path) -> None:
        """Write vectors.npy (probe.npy when known, index.faiss for ivf) into an existing folder."""
        np.save(folder / "vectors.npy", self.vectors)
        if self.probe is not None:
            np.save(folder / "probe.npy", self.probe)
        if self.backend == "ivf":
            import faiss

            faiss.write_index(self.faiss_index, str(folder / "index.faiss"))

    @classmethod
    def load(cls, folder: Path, backend: str, writable: bool = False) -> "VectorIndex":
        """Map a saved index into memory: pages are read as searches touch them, so loading takes moments.

        `writable` reads it whole instead, for an index that will change (`upsert`): FAISS cannot add
        to the lists of a mapped file.
        """
        faiss_index = None
        if backend == "ivf":
            import faiss

            flags = 0 if writable else faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
            faiss_index = faiss.read_index(str(folder / "index.faiss"), flags)
        vectors = np.load(folder / "vectors.npy", mmap_mode=None if writable else "r")
        probe = np.load(folder / "probe.npy") if (folder / "probe.npy").is_file() else None
        return cls(vectors, backend=backend, faiss_index=faiss_index, probe=probe)


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Hash of the texts in order (length-prefixed, so no two lists collide by concatenation)."""
    digest = hashlib.sha256()
    for text in texts:
        raw = text.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


class IndexCache:
    """Indexes kept on disk under `cache_dir/<key>/`, the key hashing model, texts and backend.

    Each entry is written atomically (a reader never sees half an index); the `KEEP_INDEXES`
    most recently used entries survive, older ones are removed when a new one is written.
    """

    def __init__(self, cache_dir: Optional[Path] = None):
        self.cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def key(self, model_folder: Path, texts: Sequence[str], backend: str) -> str:
        parts = [str(INDEX_FORMAT), model_fingerprint(model_folder), texts_fingerprint(texts), backend]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def load_or_build(self, model_folder: Path, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray],
                      backend: str = "auto", writable: bool = False) -> tuple[VectorIndex, bool]:
        """The cached index of `texts` under this model, or a new one from `encode(texts)`; and whether it was cached.

        The entry on disk always holds exactly `texts`: a caller that changes the index (`writable`, for
        `VectorIndex.upsert`) changes its own copy, so the key stays true for the next reader.
        """
        backend = choose_backend(len(texts), backend)
        entry = self.cache_dir / self.key(model_folder, texts, backend)
        if (entry / "index.json").is_file():
            try:
                index = VectorIndex.load(entry, backend, writable)
            except (OSError, ValueError, RuntimeError):  # a damaged entry is rebuilt, never trusted
                index = None
            if index is not None and len(index) == len(texts):
                entry.touch()
                return index, True
        vectors = encode(list(texts))
        # An encoder that knows its probe vectors (encoders.Encoder) leaves them for later readers to check against.
        index = VectorIndex(vectors, backend=backend, probe=getattr(encode, "probe", None))
        try:
            with atomic_output_dir(entry, overwrite=True) as tmp:
                index.save(tmp)
                (tmp / "index.json").write_text(json.dumps({
                    "format": INDEX_FORMAT, "model": str(model_folder), "rows": len(index),
                    "dim": int(index.vectors.shape[1]), "backend": backend}) + "\n")
        except OSError as exc:
            # Servers started together (serve --workers, or two sharing a cache) build the same entry at once; the
            # key fixes model, texts and backend, so one writer's entry is as good as the other's.
            if not (entry / "index.json").is_file():
                raise UserError(f"cannot write the index cache {self.cache_dir} ({exc.strerror or exc}); "
                                "free disk space or pass another --cache-dir") from None
        self._prune(keep=entry)
        return index, False

    def _prune(self, keep: Path) -> None:
        # Names starting with a dot are entries still being written by another process.
        entries = sorted((p for p in self.cache_dir.iterdir()
                          if not p.name.startswith(".") and p != keep and (p / "index.json").is_file()),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP_INDEXES - 1:]:
            shutil.rmtree(old, ignore_errors=True)
