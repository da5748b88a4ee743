"""`search` and `serve` on exported ONNX encoders (fp32, int8): which file runs, the probe check against the index's
model, a LoRA model served in two commands, and one-line errors for folders and files that cannot be used."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pandas as pd
import pytest

from _lora import build_adapter
from conftest import build_tiny_model
from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.core.models import PROBE_TEXTS, model_threshold
from tickettune.serving.encoders import Encoder, EncoderChoice
from tickettune.serving.search import similar_tickets
from tickettune.training.export import check_onnx_support, export_model

pytest.importorskip("onnxruntime")

TICKETS = pd.DataFrame({
    "number": [f"INC{i:03d}" for i in range(6)],
    "text": ["vpn tunnel drops every few minutes", "printer jam on floor three", "sap account locked after reset",
             "outlook cannot send mail, mailbox full", "laptop battery drains fast", "wifi on floor two is slow"]})


@pytest.fixture(scope="module")
def onnx_ready():
    try:
        check_onnx_support()
    except UserError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def lora(tiny_model, tmp_path_factory):
    return build_adapter(tiny_model, tmp_path_factory.mktemp("run") / "model")


@pytest.fixture(scope="module")
def deploy(onnx_ready, lora, tmp_path_factory):
    """The LoRA model exported as ONNX only (fp32 and int8), as `tickettune export --onnx --quantize int8` writes it."""
    folder = tmp_path_factory.mktemp("deploy") / "deploy"
    export_model(str(lora), folder, merge=False, onnx=True, quantize="int8")
    return folder


@pytest.fixture(scope="module")
def other_onnx(onnx_ready, tmp_path_factory):
    """Another model's ONNX export (a tiny model with other weights)."""
    root = tmp_path_factory.mktemp("other")
    folder = root / "export"
    export_model(str(build_tiny_model(root, seed=1)), folder, merge=False, onnx=True)
    return folder


def write_tickets(path):
    TICKETS.to_csv(path, index=False)
    return path


def test_auto_picks_the_exports_int8_file_and_onnx_file_picks_another(deploy, lora):
    record = json.loads((deploy / "export.json").read_text())
    auto = EncoderChoice.of(str(deploy))
    assert (auto.backend, auto.onnx_file) == ("onnx", record["quantized_file"])
    assert auto.label.startswith("ONNX int8")
    fp32 = EncoderChoice.of(str(deploy), onnx_file="onnx/model.onnx")
    assert (fp32.backend, fp32.onnx_file, fp32.label) == ("onnx", "onnx/model.onnx", "ONNX fp32 (onnx/model.onnx)")
    assert EncoderChoice.of(str(lora)) == EncoderChoice(lora, "torch")  # a model folder stays on PyTorch


def test_onnx_encoders_agree_with_the_pytorch_model(deploy, lora):
    torch_vectors = Encoder.of(str(lora)).encode(list(TICKETS["text"]))
    for onnx_file, floor in [("onnx/model.onnx", 0.9999), (None, 0.99)]:
        encoder = Encoder.of(str(deploy), onnx_file=onnx_file, threads=1)
        vectors = encoder.encode(list(TICKETS["text"]))
        assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert np.einsum("ij,ij->i", vectors, torch_vectors).min() > floor
        assert encoder.probe.shape == (len(PROBE_TEXTS), vectors.shape[1])


def test_onnx_runtime_threads_do_not_spin(deploy):
    encoder = Encoder.of(str(deploy), threads=2).load()
    options = encoder.model.transformers_model.session.get_session_options()
    # The threads asked for, and none spinning while it waits (it would take the core HTTP and the clients need).
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_search_on_the_export_shares_the_index_the_pytorch_model_built(deploy, lora, tmp_path):
    cache = tmp_path / "cache"
    by_torch = similar_tickets(TICKETS, str(lora), query="vpn keeps dropping", k=3, cache_dir=cache)
    assert not by_torch.cached
    by_int8 = similar_tickets(TICKETS, str(deploy), query="vpn keeps dropping", k=3, cache_dir=cache)
    assert by_int8.cached and len(list(cache.iterdir())) == 1  # the same entry: nothing encoded again
    assert list(by_int8.hits["number"]) == list(by_torch.hits["number"])
    assert np.allclose(by_int8.hits["score"], by_torch.hits["score"], atol=0.02)


def test_an_index_built_by_another_model_is_refused_in_one_line(deploy, other_onnx, tmp_path, capsys):
    # The deploy folder's files replaced by another model's: it still claims its source, whose index is cached.
    swapped = tmp_path / "swapped"
    shutil.copytree(deploy, swapped)
    record = json.loads((swapped / "export.json").read_text())
    shutil.copy2(other_onnx / "onnx" / "model.onnx", swapped / record["quantized_file"])
    tickets = write_tickets(tmp_path / "tickets.csv")
    cache = tmp_path / "cache"
    common = ["--tickets", str(tickets), "--cache-dir", str(cache), "-q", "vpn keeps dropping"]
    assert main(["search", "--model", str(deploy), *common]) == 0
    capsys.readouterr()
    assert main(["search", "--model", str(swapped), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the index in ") and err.count("\n") == 1, err
    assert "was built by another model" in err and "lowest cosine" in err and "--cache-dir" in err
    # By ticket number nothing is encoded, so nothing can disagree: the index answers as it is.
    assert main(["search", "--model", str(swapped), "--tickets", str(tickets), "--cache-dir", str(cache),
                 "--ticket", "INC000"]) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_refuses_an_index_from_another_model(deploy, other_onnx, tmp_path, capsys):
    swapped = tmp_path / "swapped"
    shutil.copytree(deploy, swapped)
    shutil.copy2(other_onnx / "onnx" / "model.onnx", swapped / "onnx" / "model.onnx")
    tickets = write_tickets(tmp_path / "tickets.csv")
    cache = tmp_path / "cache"
    similar_tickets(TICKETS, str(deploy), query="vpn", cache_dir=cache)  # the index, built by the deploy model
    code = main(["serve", "--model", str(swapped), "--onnx-file", "onnx/model.onnx", "--tickets", str(tickets),
                 "--cache-dir", str(cache), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 2 and "error: the index in" in err and "was built by another model" in err, err
    assert err.splitlines()[-1].startswith("error: ") and err.count("error") == 1


def test_lora_model_served_in_two_commands(lora, onnx_ready, tmp_path, capsys):
    fastapi = pytest.importorskip("fastapi.testclient")
    from tickettune.serving.app import Engine, ServeSettings, create_app

    run = tmp_path / "run"  # as `tickettune train` leaves it: OUT/model beside OUT/metrics.json
    shutil.copytree(lora, run / "model")
    (run / "metrics.json").write_text(json.dumps({"model": {"threshold": 0.8}}))
    deploy = tmp_path / "deploy"
    assert main(["export", "--model", str(run / "model"), "-o", str(deploy), "--onnx", "--quantize", "int8"]) == 0
    assert model_threshold(str(deploy)) == 0.8  # the deployable threshold travels with the export
    tickets = write_tickets(tmp_path / "tickets.csv")
    cache = tmp_path / "cache"
    # What `tickettune serve --model deploy --tickets tickets.csv` opens, driven in-process.
    settings = ServeSettings(model=str(deploy), tickets=str(tickets), store=str(tmp_path / "store"),
                             cache_dir=str(cache), threshold=0.8)
    engine, cached = Engine.open(settings)
    assert not cached and engine.encoder.label.startswith("ONNX int8")
    with fastapi.TestClient(create_app(engine, settings)) as client:
        health = client.get("/health").json()
        assert health["encoder"].startswith("ONNX int8 (onnx/model_q")
        hits = client.post("/similar", json={"text": "vpn tunnel drops every few minutes", "k": 2}).json()["results"]
        assert hits[0]["number"] == "INC000" and hits[0]["score"] > 0.99 and hits[0]["duplicate"] is True
        assert client.post("/tickets", json={"tickets": [{"number": "INC900", "short_description": "vpn drops hourly"}]}
                           ).json() == {"added": 1, "updated": 0, "tickets": 7}
    # The PyTorch adapter finds the same tickets on the index the int8 encoder built (and agrees with it).
    torch_settings = ServeSettings(model=str(run / "model"), tickets=str(tickets), store=str(tmp_path / "store"),
                                   cache_dir=str(cache))
    torch_engine, cached = Engine.open(torch_settings)
    assert cached and torch_engine.agreement > 0.99 and torch_engine.encoder.label == "PyTorch"


def test_folder_without_a_usable_onnx_file(deploy, tiny_model, tmp_path, capsys):
    tickets = write_tickets(tmp_path / "tickets.csv")
    empty = tmp_path / "no-onnx"
    shutil.copytree(deploy, empty)
    shutil.rmtree(empty / "onnx")
    damaged = tmp_path / "damaged"
    shutil.copytree(deploy, damaged)
    (damaged / "onnx" / "model.onnx").write_bytes(b"not a protobuf at all")
    several = tmp_path / "several"  # ONNX files but no export record saying which is which
    shutil.copytree(deploy, several)
    (several / "export.json").unlink()
    (several / "onnx" / "model.onnx").rename(several / "onnx" / "encoder.onnx")
    cases = [
        (["--model", str(tiny_model), "--backend", "onnx"], "has no ONNX file", "then pass --model DIR"),
        (["--model", str(empty)], "has no .safetensors weights and no ONNX file", "export it again"),
        (["--model", str(deploy), "--onnx-file", "onnx/nope.onnx"], "--onnx-file onnx/nope.onnx: no such file",
         "choose one of onnx/model.onnx, onnx/model_q"),
        (["--model", str(deploy), "--backend", "torch"], "has ONNX files only", "--merge"),
        (["--model", str(damaged), "--onnx-file", "onnx/model.onnx"], "onnx/model.onnx: not a usable ONNX file",
         "export it again"),
        (["--model", str(several), "--backend", "onnx"], "has several ONNX files", "name one with --onnx-file"),
        (["--model", str(deploy), "--backend", "torch", "--onnx-file", "onnx/model.onnx"], "--backend torch does not run",
         "drop one of them"),
        (["--model", str(deploy), "--backend", "gpu"], "--backend gpu is unknown", "choose one of auto, torch, onnx"),
    ]
    for args, problem, fix in cases:
        code = main(["search", *args, "--tickets", str(tickets), "--cache-dir", str(tmp_path / "cache"), "-q", "vpn"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert problem in err and fix in err, (args, err)


def cuda_only_onnx(path):
    """A graph whose int8 matrix product (com.microsoft QOrderedMatMul) has a CUDA kernel only, as a file quantized
    for a GPU has; the inputs and output are those of an exported transformer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.ones((30522, 4), np.float32), "embeddings"),
               numpy_helper.from_array(np.ones((4, 4), np.int8), "w"),
               numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
               numpy_helper.from_array(np.array(0, np.int8), "zero")]
    nodes = [helper.make_node("Gather", ["embeddings", "input_ids"], ["hidden"]),
             helper.make_node("QuantizeLinear", ["hidden", "scale", "zero"], ["quantized"]),
             helper.make_node("QOrderedMatMul", ["quantized", "scale", "w", "scale", "scale"], ["product"],
                              domain="com.microsoft", order_A=1, order_B=1, order_Y=1),
             helper.make_node("DequantizeLinear", ["product", "scale", "zero"], ["last_hidden_state"])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 4])
    graph = helper.make_graph(nodes, "cuda_only", inputs, [output], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
              str(path))


def test_quantized_file_the_cpu_cannot_run(deploy, tmp_path, capsys):
    pytest.importorskip("onnx")
    folder = tmp_path / "gpu-quantized"
    shutil.copytree(deploy, folder)
    cuda_only_onnx(folder / "onnx" / "model_qint8_cuda.onnx")
    tickets = write_tickets(tmp_path / "tickets.csv")
    code = main(["serve", "--model", str(folder), "--onnx-file", "onnx/model_qint8_cuda.onnx", "--tickets", str(tickets),
                 "--cache-dir", str(tmp_path / "cache"), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "onnx/model_qint8_cuda.onnx: this CPU cannot run it" in err and "QOrderedMatMul" in err
    assert "re-export it on this machine" in err
