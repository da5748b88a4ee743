"""Make a trained model deployable: LoRA folded into the weights, and ONNX files (optionally int8).

`export_model` takes a sentence-transformers folder (a LoRA adapter from `tickettune train`, or
a full model) and writes a standalone folder that plain `SentenceTransformer(DIR)` loads without
peft. With ONNX, the folder also holds `onnx/model.onnx` (and `onnx/model_q[u]int8_<cpu>.onnx` when
quantized) for `SentenceTransformer(DIR, backend="onnx")`. Every exported form is checked against
the source model on probe texts before the folder is moved into place. `search` and `serve --model DIR`
run the folder's ONNX file (`encoders.Encoder`) on the source model's ticket indexes.

The ONNX graph is written with torch's own exporter: optimum's exporter (which sentence-transformers
would call) fails on transformers 5.23, while optimum's ONNX Runtime model class, which loads the file,
works (see the `onnx` extra in pyproject.toml).

The int8 file (`quantize_int8`, INT8_RECIPE) is ONNX Runtime's dynamic quantization called directly rather
than through sentence-transformers' presets (optimum's `ORTQuantizer`), because optimum builds ONNX Runtime's
quantizer without `MatMulConstBOnly`, so its presets also quantize the attention's activation x activation
products and the embedding tables, and offer no way to stop it. The recipe: per-channel weights (a scale per
output column; per-tensor fell to probe cosine 0.958, below what a server accepts), only the MatMuls by a
stored weight (the linear layers; embeddings and attention products stay float, 56 MiB against 22), weights
signed int8 on VNNI and arm64 and unsigned elsewhere (`int8_weight_type`). Chosen by `benchmarks/quantize.py`
(RESULTS.md, Export: int8 candidates, 2026-12-06): of the candidates as fast as the presets, its query vectors
are the closest to PyTorch's (mean cosine 0.9948 against 0.9942 for the avx512_vnni preset and 0.9939 for the
avx2 one) with the largest probe margin (0.9929 against 0.9903), and precision@10 within 0.01 of PyTorch's on
both query sets (-0.009 and -0.004). Precision@10 there moves by whole queries either way (about 7% of
queries change nearest incident under any int8 file), so it separates the candidates less than the cosines do.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypedDict

import numpy as np

from tickettune.core.errors import UserError
from tickettune.core.files import atomic_output_dir, check_output_dir
from tickettune.core.models import PROBE_TEXTS
from tickettune.data.leakage import TRAINING_TEXTS

QUANTIZE_CHOICES = ("int8",)
# A merged model computes the same function as the adapter; fp32 ONNX the same as PyTorch.
MIN_COSINE = 0.9999
# The int8 file must agree with the model on the probe texts as closely as a server demands of an encoder beside
# the model's index (encoders.MIN_AGREEMENT), or it could not serve that index.
MIN_INT8_COSINE = 0.99
# How `--quantize int8` quantizes (`quantize_int8`; the module docstring and RESULTS.md, Export, say why).
class Int8Recipe(TypedDict):
    per_channel: bool
    op_types: tuple[str, ...]
    const_b_only: bool


INT8_RECIPE: Int8Recipe = {"per_channel": True, "op_types": ("MatMul",), "const_b_only": True}


@dataclass
class ExportResult:
    """What `export_model` wrote: the folder, whether an adapter was folded in, files, and check cosines."""

    folder: Path
    merged_adapter: bool
    files: list[str] = field(default_factory=list)
    cosines: dict[str, float] = field(default_factory=dict)
    onnx_file: Optional[str] = None
    quantized_file: Optional[str] = None
    quantization: Optional[dict] = None  # how the int8 file was made (quantize_int8's record)


def check_onnx_support() -> None:
    """Fail early, in one line, when optimum's ONNX Runtime support or torch's ONNX exporter is unusable."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
    except Exception as exc:  # an incompatible optimum fails inside transformers' lazy imports, not just ImportError
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UserError(f"--onnx needs onnxruntime, onnxscript and optimum's ONNX Runtime classes, which do not import "
                        f"here ({reason}); pip install 'tickettune[onnx]'") from None


def quantization_target() -> str:
    """sentence-transformers' dynamic-quantization preset for this CPU: arm64, avx512_vnni, avx512 or avx2."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def int8_weight_type(target: str) -> str:
    """ONNX Runtime's weight type for `target`: signed int8 where the CPU multiplies u8 x s8 without saturating
    (VNNI, arm64); unsigned on AVX2/AVX-512 without VNNI, whose u8 x s8 instruction (VPMADDUBSW) can saturate
    (ONNX Runtime's quantization guide; what sentence-transformers' presets choose too)."""
    return "QInt8" if target in ("avx512_vnni", "arm64") else "QUInt8"


def weight_matmuls(path: Path) -> list[str]:
    """Names of the graph's MatMul nodes whose second input is a stored weight (the linear layers), in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def quantize_int8(source: Path, dest: Path, *, target: Optional[str] = None,
                  per_channel: bool = INT8_RECIPE["per_channel"], op_types: tuple[str, ...] = INT8_RECIPE["op_types"],
                  const_b_only: bool = INT8_RECIPE["const_b_only"], keep_last: int = 0,
                  weight_type: Optional[str] = None) -> dict:
    """Dynamically quantize the ONNX file `source` to int8 at `dest` with ONNX Runtime's `quantize_dynamic`;
    what was done, as a record for export.json. The defaults are INT8_RECIPE (the module docstring says why).

    `op_types`: the operators quantized (ONNX Runtime's default is every one it can, the embeddings' Gather
    included); `const_b_only`: only MatMuls by a stored weight, not the attention's activation x activation
    products; `keep_last`: that many of the last weight MatMuls stay float; `weight_type` QInt8 or QUInt8
    (default: `int8_weight_type(target)`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = target or quantization_target()
    weight_type = weight_type or int8_weight_type(target)
    weights = weight_matmuls(source)
    excluded = weights[len(weights) - keep_last:] if keep_last else []
    root = logging.getLogger()
    level = root.level
    # It logs, on the root logger, advice to pre-process the graph first (shape inference, fusions): not needed
    # for the weight MatMuls quantized here, and no news a user can act on.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(dest), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         weight_type=QuantType[weight_type], nodes_to_exclude=excluded,
                         extra_options={"MatMulConstBOnly": const_b_only})
    finally:
        root.setLevel(level)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "target": target, "weight_type": weight_type,
            "per_channel": per_channel, "op_types": list(op_types), "matmul_const_b_only": const_b_only,
            "nodes_excluded": excluded}


def adapter_folder(model_folder: Path) -> Optional[Path]:
    """The folder holding the transformer module's LoRA adapter (adapter_config.json), if the model has one."""
    modules = model_folder / "modules.json"
    sub = json.loads(modules.read_text())[0].get("path", "") if modules.is_file() else ""
    folder = model_folder / sub
    return folder if (folder / "adapter_config.json").is_file() else None


def merge_adapter(model, adapter: Path) -> None:
    """Replace the model's transformer (base + LoRA) by one with the adapter folded into its weights."""
    from peft import PeftConfig, PeftModel

    # A fresh base of the class sentence-transformers chose, since the loaded one already carries the adapter.
    base = type(model[0].model).from_pretrained(PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for the user to do
        warnings.simplefilter("ignore", FutureWarning)
        model[0].model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()


def export_onnx(model, folder: Path) -> Path:
    """Write the transformer's graph to `folder/onnx/model.onnx` (inputs as its tokenizer names them)."""
    import torch

    transformer = model[0]
    features = model.preprocess(list(PROBE_TEXTS[:2]))
    inputs = {name: features[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in features}
    batch, length = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
    path = folder / "onnx" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter's notes (skipped torchvision ops, axis renames, deprecations) are no news to a user.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(transformer.model.eval(), (), str(path), kwargs=inputs, input_names=list(inputs),
                              output_names=["last_hidden_state"], dynamic_shapes={n: {0: batch, 1: length} for n in inputs},
                              dynamo=True, external_data=False, verbose=False)
    finally:
        exporter_log.setLevel(level)
    return path


def min_cosine(reference: np.ndarray, model) -> float:
    """Smallest cosine between `reference` embeddings of PROBE_TEXTS and `model`'s."""
    other = model.encode(list(PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    return float(np.min(np.einsum("ij,ij->i", reference, other)))


def export_model(model: str, out: Path, *, merge: bool = True, onnx: bool = False, quantize: Optional[str] = None,
                 overwrite: bool = False) -> ExportResult:
    """Export `model` (folder or name) to `out`: merged PyTorch weights (`merge`), ONNX (`onnx`), int8 (`quantize`).

    Without `merge` the folder keeps only what the ONNX backend needs (no PyTorch weights).
    """
    from sentence_transformers import SentenceTransformer

    from tickettune.core.models import load_model, model_fingerprint, model_threshold, resolve_model

    if not merge and not onnx:
        raise UserError("nothing to export; pass --merge (PyTorch folder) and/or --onnx")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise UserError(f"--quantize {quantize} is not supported; choose one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize is not None and not onnx:
        raise UserError("--quantize applies to the ONNX export; add --onnx")
    out = Path(out)
    check_output_dir(out, overwrite)
    if onnx:
        check_onnx_support()
    source = resolve_model(model)
    threshold = model_threshold(model)  # checked before the work: a broken metrics.json is a one-line error
    if out.resolve() == source.resolve():
        raise UserError(f"-o {out} is the model folder itself; choose another output directory")
    st = load_model(model)
    st.to("cpu")
    reference = st.encode(list(PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    adapter = adapter_folder(source)
    result = ExportResult(folder=out, merged_adapter=adapter is not None)
    if adapter is not None:
        merge_adapter(st, adapter)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        st.save(str(tmp))
        result.cosines["merged"] = min_cosine(reference, SentenceTransformer(str(tmp), device="cpu"))
        if result.cosines["merged"] < MIN_COSINE:
            raise RuntimeError(f"the merged model's embeddings differ from the source (cosine "
                               f"{result.cosines['merged']:.6f} < {MIN_COSINE}); nothing was written")
        if not merge:  # removed before the ONNX check, which so proves the folder loads without them
            for weights in list(tmp.glob("model*.safetensors")) + list(tmp.glob("model.safetensors.index.json")):
                weights.unlink()
        if onnx:
            _export_onnx_files(st, tmp, reference, quantize, result)
        if (source / TRAINING_TEXTS).is_file():  # the exported model was trained on the same texts
            shutil.copy2(source / TRAINING_TEXTS, tmp / TRAINING_TEXTS)
        (tmp / "export.json").write_text(json.dumps({
            # Indexes are keyed by it (core.models.model_fingerprint): the exported forms share the source's.
            "source": str(source), "source_fingerprint": model_fingerprint(source),
            "threshold": threshold, "merged_adapter": result.merged_adapter, "onnx_file": result.onnx_file,
            "quantized_file": result.quantized_file, "quantization": result.quantization,
            "min_cosine_vs_source": result.cosines}, indent=2) + "\n")
        result.files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    return result


def _export_onnx_files(st, folder: Path, reference: np.ndarray, quantize: Optional[str], result: ExportResult) -> None:
    """model.onnx (checked to match PyTorch) and, with `quantize`, the int8 file beside it (its cosine reported)."""
    from sentence_transformers import SentenceTransformer

    result.onnx_file = export_onnx(st, folder).relative_to(folder).as_posix()
    onnx_model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
    result.cosines["onnx"] = min_cosine(reference, onnx_model)
    if result.cosines["onnx"] < MIN_COSINE:
        raise RuntimeError(f"the ONNX model's embeddings differ from PyTorch (cosine {result.cosines['onnx']:.6f} "
                           f"< {MIN_COSINE}); nothing was written")
    if quantize is None:
        return
    target = quantization_target()
    quantized = folder / "onnx" / f"model_{int8_weight_type(target).lower()}_{target}.onnx"
    result.quantization = quantize_int8(folder / result.onnx_file, quantized, target=target)
    result.quantized_file = quantized.relative_to(folder).as_posix()
    int8 = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"file_name": result.quantized_file})
    result.cosines["onnx_int8"] = min_cosine(reference, int8)
    if result.cosines["onnx_int8"] < MIN_INT8_COSINE:
        raise UserError(f"the int8 model's embeddings differ too much from the model's (probe cosine "
                        f"{result.cosines['onnx_int8']:.4f} < {MIN_INT8_COSINE}), so a server would refuse the model's "
                        "ticket index with it; nothing was written; export without --quantize (fp32 ONNX)")
