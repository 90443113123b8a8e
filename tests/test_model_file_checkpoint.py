"""Training checkpoints distrust their header too: CheckpointError naming the field."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from atomnet.potential import Potential
from atomnet.training.checkpoint import (
    CheckpointError,
    TrainState,
    read_checkpoint,
    save_checkpoint,
)

RECIPE = {"elements": ["H", "O"], "stages": [], "terms": [
    {"name": "e0", "type": "atomic_reference"},
    {"name": "short_range", "type": "bpnn", "hidden": [4], "n_radial": 2,
     "n_angular_radial": 1, "n_angle_sections": 1},
]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    potential = Potential.from_recipe(RECIPE)
    optimizer = torch.optim.Adam(potential.parameters(), lr=1e-3)
    potential.terms["short_range"].net.weights[0].sum().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.atomnet"
    save_checkpoint(path, potential, potential.state_dict(), optimizer, None,
                    TrainState(epoch=1), {"training": {"lr": 1e-3}})
    header, _ = read_checkpoint(path)
    return path, header, load_file(str(path))


def _write(path, header, tensors):
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(tensors, str(path), metadata={"atomnet_checkpoint": text})
    return path


def test_good_checkpoint_reads(checkpoint):
    header, tensors = read_checkpoint(checkpoint[0])
    assert header["state"]["epoch"] == 1 and "rng.torch" in tensors


@pytest.mark.parametrize(("keys", "value", "message"), [
    (("state",), None, r"field 'state' must be a JSON object, got None"),
    (("state", "epoch"), "1", r"field 'state.epoch' must be an integer, got '1'"),
    (("state", "bogus"), 1, r"field 'state.bogus' is unknown"),
    (("optimizer", "param_groups"), {}, r"'optimizer.param_groups' must be a list"),
    (("optimizer", "scalars", "x"), {}, r"'optimizer.scalars.x' must be an object under"),
    (("rng", "numpy"), [1], r"'rng.numpy' must be a list of 5 entries"),
    (("scheduler",), [], r"'scheduler' must be a JSON object or null"),
    (("config",), "cfg", r"'config' must be a JSON object"),
    (("format",), "atomnet-checkpoint/9", r"unsupported checkpoint format"),
], ids=lambda v: str(v))
def test_malformed_checkpoint_header(checkpoint, tmp_path, keys, value, message):
    path, header, tensors = checkpoint
    header = copy.deepcopy(header)
    target = header
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(_write(tmp_path / "bad.atomnet", header, tensors))


@pytest.mark.parametrize("missing", ["state", "optimizer", "scheduler", "rng", "config"])
def test_missing_checkpoint_field(checkpoint, tmp_path, missing):
    path, header, tensors = checkpoint
    header = {k: v for k, v in header.items() if k != missing}
    with pytest.raises(CheckpointError, match=f"field '{missing}' is missing"):
        read_checkpoint(_write(tmp_path / "bad.atomnet", header, tensors))


@pytest.mark.parametrize("text", ["{not json", "[1]", "[" * 5000 + "]" * 5000])
def test_checkpoint_header_not_an_object(checkpoint, tmp_path, text):
    with pytest.raises(CheckpointError):
        read_checkpoint(_write(tmp_path / "bad.atomnet", text, checkpoint[2]))


def test_checkpoint_tensor_names_and_truncation(checkpoint, tmp_path):
    path, header, tensors = checkpoint
    bad = {**tensors, "optimizer.x.exp_avg": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unexpected tensor 'optimizer.x.exp_avg'"):
        read_checkpoint(_write(tmp_path / "bad.atomnet", header, bad))
    data = path.read_bytes()
    for n in (0, 5, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.atomnet").write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            read_checkpoint(tmp_path / "cut.atomnet")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.atomnet")
