import json
import shutil

import pytest

from tickettune.cli import main
from tickettune.core import models
from tickettune.core.errors import UserError


def test_missing_model_says_where_it_looked_and_how_to_fix():
    with pytest.raises(UserError) as info:
        models.resolve_model("sentence-transformers/all-mpnet-base-v2-not-here")
    message = str(info.value)
    assert "not found offline" in message and "--model DIR" in message and "get-mpnet.sh" in message


def test_packaged_minilm_is_hash_checked(tmp_path, monkeypatch, minilm):
    fake = tmp_path / "model"
    shutil.copytree(models.packaged_minilm(), fake)
    (fake / "model.safetensors").write_bytes(b"tampered")
    monkeypatch.setattr(models, "packaged_minilm", lambda: fake)
    with pytest.raises(UserError, match="sha256"):
        models.resolve_model("all-MiniLM-L6-v2")


def test_pickled_weights_are_refused(tmp_path, tiny_model):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UserError, match="never unpickles"):
        models.resolve_model(str(folder))


def _pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [("printer jam on floor 2", "paper stuck in printer", 1), ("vpn keeps dropping", "cannot reach vpn", 1),
            ("printer jam on floor 2", "password reset please", 0), ("outlook crashes", "disk is full", 0),
            ("disk is full", "no space left on drive", 1), ("vpn keeps dropping", "new laptop request", 0)]
    path.write_text("\n".join(json.dumps({"text1": a, "text2": b, "label": c}) for a, b, c in rows) + "\n")
    return path


def test_evaluate_command_writes_the_json_layout(tmp_path, tiny_model, capsys):
    out = tmp_path / "m.json"
    code = main(["evaluate", "--model", str(tiny_model), "--pairs", str(_pairs(tmp_path)), "--baseline", str(tiny_model),
                 "--json", str(out), "--folds", "2", "--resamples", "100"])
    assert code == 0
    data = json.loads(out.read_text())["test"]
    assert set(data) == {"model", "baseline", "change"}
    assert {"spearman", "roc_auc", "spearman_ci95", "roc_auc_ci95"} <= set(data["change"])
    assert data["change"]["spearman"] == 0.0
    assert "Spearman" in capsys.readouterr().out
    # A second run must not overwrite the results it would replace.
    assert main(["evaluate", "--model", str(tiny_model), "--pairs", str(_pairs(tmp_path)), "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "words"), [
    (["evaluate", "--pairs", "x.json"], ["--model"]),
    (["nonsense"], ["No such command"]),
    (["evaluate", "--model", "no-such-model-anywhere", "--pairs", "PAIRS"], ["not found offline"]),
    (["evaluate", "--model", "TINY", "--pairs", "missing.json"], ["missing.json", "not found"]),
    (["evaluate", "--model", "TINY", "--pairs", "PAIRS", "--folds", "1"], ["--folds"]),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, tiny_model, capsys, args, words):
    pairs = str(_pairs(tmp_path))
    args = [pairs if a == "PAIRS" else str(tiny_model) if a == "TINY" else str(tmp_path / a) if a == "missing.json" else a
            for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("error:")
    for word in words:
        assert word in err


def test_presets_command_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("v2", "conservative", "aggressive", "hard-focus", "recommended"):
        assert name[:6] in out
