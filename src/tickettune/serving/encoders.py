"""The text encoder `search` and `serve` embed with: a model folder's PyTorch weights, or one of its ONNX files
(fp32 or int8, as `tickettune export --onnx [--quantize int8]` writes them) run by ONNX Runtime through
sentence-transformers' own ONNX backend.

An index is searched with vectors from whichever encoder serves, so each index records the probe-text
vectors of the encoder that built it (`search.IndexCache`), and `Encoder.check_agrees` refuses, in one
line, an encoder whose vectors differ from those (cosine below `MIN_AGREEMENT`): another model's index.
An export folder shares the index of the model it was exported from (`core.models.model_fingerprint`), so a
PyTorch-built index serves the int8 encoder without encoding the tickets again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tickettune.core.errors import UserError
from tickettune.core.models import PROBE_TEXTS, has_torch_weights, load_model, resolve_model

ENCODER_BACKENDS = ("auto", "torch", "onnx")
# Dynamic int8 quantization of MiniLM keeps cosine 0.992 to PyTorch on the probe texts (RESULTS.md, Export);
# another model's vectors are nowhere near (two tiny test models: about 0).
MIN_AGREEMENT = 0.99
EXPORT_RECORD = "export.json"


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder a model folder gives: `backend` torch or onnx, and for onnx the file (relative to `folder`).

    Example: `EncoderChoice(Path("deploy"), "onnx", "onnx/model_qint8_avx512_vnni.onnx")`.
    """

    folder: Path
    backend: str
    onnx_file: Optional[str] = None

    @property
    def label(self) -> str:
        if self.backend == "torch":
            return "PyTorch"
        return f"ONNX {'int8' if 'int8' in Path(self.onnx_file or '').name else 'fp32'} ({self.onnx_file})"

    @classmethod
    def of(cls, model: str, *, backend: str = "auto", onnx_file: Optional[str] = None) -> "EncoderChoice":
        """Resolve the model (a folder or a name `resolve_model` knows) and pick its encoder, loading nothing.

        `auto`: ONNX for a `tickettune export` folder with an ONNX file (its int8 file when it has one) or a
        folder with ONNX files only, PyTorch otherwise. `onnx_file` (relative to the folder) implies onnx.
        """
        if backend not in ENCODER_BACKENDS:
            raise UserError(f"--backend {backend} is unknown; choose one of {', '.join(ENCODER_BACKENDS)}")
        folder = resolve_model(model)
        if onnx_file is not None and backend == "torch":
            raise UserError("--onnx-file names an ONNX file, which --backend torch does not run; drop one of them")
        has_weights = has_torch_weights(folder)
        onnx_files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*.onnx"))
        record = _export_record(folder)
        if backend == "auto":
            exported_onnx = bool(record.get("onnx_file")) and bool(onnx_files)
            backend = "onnx" if onnx_file is not None or exported_onnx or (onnx_files and not has_weights) else "torch"
        if backend == "torch":
            if not has_weights:
                raise UserError(f"model folder {folder} has ONNX files only, no PyTorch weights (.safetensors); "
                                "drop --backend torch, or export with --merge for PyTorch weights")
            return cls(folder, "torch")
        return cls(folder, "onnx", _onnx_file(folder, onnx_files, onnx_file, record))


def _export_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _onnx_file(folder: Path, found: list[str], wanted: Optional[str], record: dict) -> str:
    """The ONNX file to run: `wanted`, else the export's int8 file, else its fp32 file, else the only one."""
    if not found:
        raise UserError(f"model folder {folder} has no ONNX file (no *.onnx in it); export one: tickettune "
                        f"export --model {folder} -o DIR --onnx --quantize int8, then pass --model DIR (or drop "
                        "--backend onnx to run the PyTorch weights)")
    if wanted is not None:
        wanted = Path(wanted).as_posix()
        if wanted not in found:
            raise UserError(f"--onnx-file {wanted}: no such file in {folder}; choose one of {', '.join(found)}")
        return wanted
    for preferred in (record.get("quantized_file"), record.get("onnx_file"), "onnx/model.onnx"):
        if preferred in found:
            return preferred
    if len(found) == 1:
        return found[0]
    raise UserError(f"model folder {folder} has several ONNX files ({', '.join(found)}); name one with --onnx-file")


class Encoder:
    """Unit-length embeddings from one model folder by one backend, each distinct text encoded once.

    The model is loaded on first use (a cached index searched by ticket number needs none); loading
    encodes the probe texts at once, so a file this CPU cannot run fails there, in one line. An Encoder
    is also the `encode` callable `search.IndexCache` takes, which records its `probe` with a new index.

    Example: `Encoder.of("deploy")(["VPN drops hourly"])` is a (1, dim) float32 array; `deploy`, written
    by `tickettune export --onnx --quantize int8`, runs its int8 file on ONNX Runtime.
    """

    def __init__(self, choice: EncoderChoice, threads: Optional[int] = None):
        self.choice = choice
        self.threads = threads  # ONNX Runtime's intra-op threads (torch's are the process's)
        self.model = None
        self.probe_vectors: Optional[np.ndarray] = None

    @classmethod
    def of(cls, model: str, *, backend: str = "auto", onnx_file: Optional[str] = None,
           threads: Optional[int] = None) -> "Encoder":
        """The encoder `EncoderChoice.of` picks for `model`, not loaded yet."""
        return cls(EncoderChoice.of(model, backend=backend, onnx_file=onnx_file), threads)

    @property
    def folder(self) -> Path:
        return self.choice.folder

    @property
    def label(self) -> str:
        return self.choice.label

    @property
    def probe(self) -> np.ndarray:
        """This encoder's vectors of core.models.PROBE_TEXTS (loads the model)."""
        self.load()
        if self.probe_vectors is None:
            raise RuntimeError("the encoder loaded without its probe vectors")
        return self.probe_vectors

    def load(self) -> "Encoder":
        if self.model is None:
            self.model = load_model(str(self.folder)) if self.choice.backend == "torch" else self._load_onnx()
            try:
                self.probe_vectors = self.encode(list(PROBE_TEXTS))
            except Exception as exc:  # some kernels fail only when they first run
                self.model = None
                if self.choice.backend == "torch":
                    raise
                raise UserError(_onnx_failure(self.choice, exc)) from None
        return self

    def _load_onnx(self):
        try:
            import onnxruntime
            from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
        except Exception as exc:  # an incompatible optimum fails inside transformers' lazy imports, not just ImportError
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise UserError(f"the ONNX encoder needs onnxruntime and optimum's ONNX Runtime classes, which do not "
                            f"import here ({reason}); pip install 'tickettune[onnx]' or pass --backend torch") from None
        from sentence_transformers import SentenceTransformer

        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # one graph at a time: a second pool would only contend for the cores
        # ONNX Runtime's pool threads spin while they wait for work, taking the core that HTTP and the clients need:
        # with spinning, two threads served 85 requests/s at 8 clients (p95 147 ms) against one thread's 94; without,
        # 100 (p95 109 ms) against 96 (RESULTS.md, Serve, 2026-12-06). One thread has no pool and does not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        kwargs = {"file_name": self.choice.onnx_file, "provider": "CPUExecutionProvider", "session_options": options}
        try:
            return SentenceTransformer(str(self.folder), backend="onnx", device="cpu", local_files_only=True,
                                       trust_remote_code=False, model_kwargs=kwargs)
        except Exception as exc:  # onnxruntime's errors are many types; its status names the kind
            raise UserError(_onnx_failure(self.choice, exc)) from None

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts, show_progress=len(texts) > 10_000)

    @property
    def batch_size(self) -> int:
        """Texts per forward pass. ONNX Runtime's per-call cost is small, so one text a pass wastes nothing on
        padding a batch to its longest text (a one-off timing of 8 incident texts at a time, int8, one thread:
        35 texts/s against 20 in one batch of 8). PyTorch's per-call cost ate that gain, so it keeps batches."""
        return 64 if self.choice.backend == "torch" else 1

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """One unit vector per text, in order (float32, shape (len(texts), dim))."""
        from tickettune.core.similarity import encode_texts

        self.load()
        # Texts beyond the model's window are cut by its tokenizer (max_seq_length), not refused.
        vectors = encode_texts(self.model, texts, batch_size=self.batch_size, show_progress=show_progress)
        return np.stack([vectors[t] for t in texts]).astype(np.float32, copy=False)

    def agreement(self, reference: np.ndarray) -> float:
        """Lowest cosine between this encoder's probe vectors and `reference` (another encoder's `probe`)."""
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != self.probe.shape:
            return -1.0  # another dimension: another model
        return float(np.min(np.einsum("ij,ij->i", self.probe, reference)))

    def check_agrees(self, reference: Optional[np.ndarray], where: str) -> Optional[float]:
        """Refuse (UserError) an index whose builder's probe vectors (`reference`) are not this encoder's.

        Returns the lowest cosine, or None when the index recorded no probe vectors (built in this process).
        """
        if reference is None:
            return None
        cosine = self.agreement(reference)
        if cosine < MIN_AGREEMENT:
            shown = "another dimension" if cosine == -1.0 else f"lowest cosine {cosine:.3f} < {MIN_AGREEMENT}"
            raise UserError(f"the index in {where} was built by another model than the {self.label} encoder of "
                            f"{self.folder} (probe texts: {shown}); serve the model that built it, or pass another "
                            "--cache-dir to index the tickets with this one")
        return cosine


def _onnx_failure(choice: EncoderChoice, exc: Exception) -> str:
    """One line for an ONNX file that does not load or run: what ONNX Runtime said, and what to do."""
    import onnxruntime

    detail = " ".join(str(exc).split())
    # ONNX Runtime's message: "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Load model from PATH failed:REASON".
    reason = re.sub(r"^Load model from .* failed:\s*", "", detail.split(" : ")[-1])[:200] or type(exc).__name__
    where = f"{choice.folder}/{choice.onnx_file}"
    if "NOT_IMPLEMENTED" in detail or type(exc).__name__ == "NotImplemented":
        return (f"{where}: this CPU cannot run it with onnxruntime {onnxruntime.__version__} ({reason}); re-export it "
                "on this machine (tickettune export --onnx --quantize int8) or choose another file with --onnx-file")
    if any(kind in detail for kind in ("INVALID_PROTOBUF", "INVALID_GRAPH", "NO_MODEL", "Protobuf parsing failed")):
        return f"{where}: not a usable ONNX file ({reason}); export it again with tickettune export --onnx"
    return (f"{where}: ONNX Runtime could not load or run it ({reason}); export it again with tickettune export "
            "--onnx, or pass --backend torch")
