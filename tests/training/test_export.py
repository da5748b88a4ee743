"""Export: the merged folder equals the adapter and loads without peft; ONNX (fp32 and int8); one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from _lora import build_adapter
from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.training import export as export_module
from tickettune.training.export import check_onnx_support, export_model

TEXTS = ["vpn tunnel drops every few minutes", "printer jam on floor three", "sap account locked after reset",
         "a much longer ticket text that goes on about the mailbox being full and outlook refusing to send"]


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    return build_adapter(tiny_model, tmp_path_factory.mktemp("run") / "model")


def encode(folder, **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", **kwargs)
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_merged_export_equals_adapter_and_needs_no_peft(adapter, tiny_model, tmp_path):
    import pandas as pd

    from tickettune.data.leakage import TRAINING_TEXTS, write_training_texts

    write_training_texts(adapter, pd.DataFrame({"text1": ["vpn drops"], "text2": ["vpn disconnects"]}))
    result = export_model(str(adapter), tmp_path / "merged", merge=True)
    folder = tmp_path / "merged"
    # The exported model was trained on the same texts: evaluate's leakage guard must still know them.
    assert (folder / TRAINING_TEXTS).read_bytes() == (adapter / TRAINING_TEXTS).read_bytes()
    assert result.merged_adapter and result.cosines["merged"] > 0.9999
    assert not (folder / "adapter_config.json").exists() and (folder / "model.safetensors").is_file()
    cosines = np.einsum("ij,ij->i", encode(adapter), encode(folder))
    assert cosines.min() > 0.9999
    # The adapter really changes the embeddings, so agreeing with it is not agreeing with the base model.
    assert np.einsum("ij,ij->i", encode(tiny_model), encode(folder)).min() < 0.999
    # Loads where peft cannot even be imported.
    code = ("import sys; sys.modules['peft'] = None\nfrom sentence_transformers import SentenceTransformer\n"
            f"print(SentenceTransformer({str(folder)!r}, device='cpu').encode(['x']).shape)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(1, 32)" in run.stdout
    assert json.loads((folder / "export.json").read_text())["merged_adapter"] is True


def test_full_model_exports_as_is(tiny_model, tmp_path):
    result = export_model(str(tiny_model), tmp_path / "out", merge=True)
    assert not result.merged_adapter and result.cosines["merged"] > 0.9999


def test_onnx_export_fp32_and_int8(adapter, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        check_onnx_support()
    except UserError as exc:
        pytest.skip(str(exc))
    folder = tmp_path / "onnx-only"
    result = export_model(str(adapter), folder, merge=False, onnx=True, quantize="int8")
    assert result.onnx_file == "onnx/model.onnx"
    assert re.fullmatch(r"onnx/model_qu?int8_\w+\.onnx", result.quantized_file)
    assert not list(folder.glob("*.safetensors"))  # without --merge, only what the ONNX backend needs
    reference = encode(adapter)
    onnx = encode(folder, backend="onnx")
    int8 = encode(folder, backend="onnx", model_kwargs={"file_name": result.quantized_file})
    assert np.einsum("ij,ij->i", reference, onnx).min() > 0.9999
    assert np.einsum("ij,ij->i", reference, int8).min() > 0.99
    assert result.cosines["onnx"] > 0.9999 and 0.99 < result.cosines["onnx_int8"] <= 1.0


def test_int8_file_quantizes_the_linear_layers_per_channel_and_nothing_else(adapter, tmp_path):
    import onnx
    from onnx import TensorProto

    onnx_support()
    folder = tmp_path / "int8"
    result = export_model(str(adapter), folder, merge=False, onnx=True, quantize="int8")
    record = json.loads((folder / "export.json").read_text())["quantization"]
    target = export_module.quantization_target()
    assert record == result.quantization and record["tool"] == "onnxruntime.quantization.quantize_dynamic"
    assert record["weight_type"] == export_module.int8_weight_type(target) and record["nodes_excluded"] == []
    fp32 = onnx.load(str(folder / result.onnx_file)).graph
    int8 = onnx.load(str(folder / result.quantized_file)).graph
    weights = {i.name: i for i in int8.initializer}
    signed = record["weight_type"] == "QInt8"
    linear = [n for n in int8.node if n.op_type == "MatMulInteger"]
    assert len(linear) >= len(export_module.weight_matmuls(folder / result.onnx_file)) > 0
    for node in linear:
        b, b_zero = weights[node.input[1]], weights[node.input[3]]
        assert b.data_type == (TensorProto.INT8 if signed else TensorProto.UINT8)
        assert list(b_zero.dims) == [b.dims[1]] and b.dims[1] > 1  # a zero point (and scale) per output column
    # The attention's activation x activation products stay float MatMuls, the embedding tables float.
    products = [n for n in fp32.node if n.op_type == "MatMul" and n.input[1] not in {i.name for i in fp32.initializer}]
    assert len(products) > 0 and sum(n.op_type == "MatMul" for n in int8.node) == len(products)
    tables = [weights[n.input[0]] for n in int8.node if n.op_type == "Gather" and n.input[0] in weights]
    assert tables and all(t.data_type == TensorProto.FLOAT for t in tables)
    # On texts other than the probes too, int8 stays as close to the model as a server demands of it.
    reference = encode(adapter)
    vectors = encode(folder, backend="onnx", model_kwargs={"file_name": result.quantized_file})
    assert np.einsum("ij,ij->i", reference, vectors).min() >= export_module.MIN_INT8_COSINE


def test_quantize_int8_keeps_the_last_linear_layers_float(adapter, tmp_path):
    import onnx

    onnx_support()
    folder = tmp_path / "fp32"
    result = export_model(str(adapter), folder, merge=False, onnx=True)
    names = export_module.weight_matmuls(folder / result.onnx_file)
    record = export_module.quantize_int8(folder / result.onnx_file, tmp_path / "int8.onnx", keep_last=2)
    assert record["nodes_excluded"] == names[-2:]
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    kept = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert set(names[-2:]) <= kept and not set(names[:-2]) & kept


def test_an_int8_file_too_far_from_the_model_is_refused(adapter, tmp_path, monkeypatch):
    onnx_support()
    monkeypatch.setattr(export_module, "MIN_INT8_COSINE", 1.01)  # no int8 file reaches it
    with pytest.raises(UserError, match=r"int8 model's embeddings differ .* export without --quantize"):
        export_model(str(adapter), tmp_path / "out", merge=False, onnx=True, quantize="int8")
    assert not (tmp_path / "out").exists()


def onnx_support():
    pytest.importorskip("onnxruntime")
    try:
        check_onnx_support()
    except UserError as exc:
        pytest.skip(str(exc))


def test_missing_onnx_support_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'tickettune\[onnx\]'"):
        check_onnx_support()


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "no/such/model", "--merge"], "model 'no/such/model' not found offline"),
    (["--model", "{adapter}", "--merge"], "already holds results; pass --overwrite"),
    (["--model", "{adapter}"], "nothing to export; pass --merge"),
    (["--model", "{adapter}", "--merge", "--quantize", "int8"], "--quantize applies to the ONNX export"),
    (["--model", "{adapter}", "--onnx", "--quantize", "int4"], "--quantize int4 is not supported"),
])
def test_export_errors_are_one_line(adapter, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    existing = "--overwrite" in message
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("earlier result")
    code = main(["export", *[a.format(adapter=adapter) for a in args], "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if existing else [])  # nothing half-written
    assert not existing or (out / "keep.txt").read_text() == "earlier result"


def test_cli_export_overwrite_replaces_atomically(adapter, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["export", "--model", str(adapter), "-o", str(out), "--merge"]) == 0
    assert "LoRA adapter folded into the weights" in capsys.readouterr().out
    first = (out / "model.safetensors").stat().st_mtime_ns

    def broken(*_args, **_kwargs):
        raise UserError("probe: simulated failure; nothing to fix")

    monkeypatch.setattr(export_module, "min_cosine", broken)
    assert main(["export", "--model", str(adapter), "-o", str(out), "--merge", "--overwrite"]) == 2
    assert (out / "model.safetensors").stat().st_mtime_ns == first
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
