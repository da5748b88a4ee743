"""Which checkpoint --resume continues from: the newest *complete* one (transformers' get_last_checkpoint would
take a half-written newer one), and none where no checkpoint folder exists yet."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from tickettune.core.errors import UserError
from tickettune.training.checkpoints import last_checkpoint


def checkpoint(folder, step, complete=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(path / "adapter_model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt"):
        (path / name).write_bytes(b"x")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_a_half_written_newer_checkpoint_is_passed_over(tmp_path):
    done = checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 20, complete=False)
    checkpoint(tmp_path, 9)
    assert last_checkpoint(tmp_path) == done


def test_no_folder_or_no_complete_checkpoint_is_none(tmp_path):
    assert last_checkpoint(tmp_path / "not-yet") is None
    checkpoint(tmp_path, 5, complete=False)
    assert last_checkpoint(tmp_path) is None


def test_a_damaged_newest_checkpoint_is_named(tmp_path):
    checkpoint(tmp_path, 10)
    damaged = checkpoint(tmp_path, 20)
    (damaged / "adapter_model.safetensors").write_bytes(b"cut")
    with pytest.raises(UserError, match="checkpoint-20 is corrupted"):
        last_checkpoint(tmp_path)
