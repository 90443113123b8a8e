"""Model files: round trip, header, clean rejection of bad files, never unpickled."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import atomnet
from atomnet import units
from atomnet.derivatives import evaluate
from atomnet.io import FORMAT, read_header
from atomnet.io.model_file import ModelFileError

E0S = {"H": -13.6, "C": -1029.8, "O": -2041.3}
PACKAGE = Path(atomnet.__file__).parent


DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
]


def _trained_like(potential, dtype: torch.dtype) -> atomnet.Potential:
    """Non-default E0s, weights, feature statistics, scale and shift, all in ``dtype``."""
    potential = potential.to(dtype)
    potential.terms["e0"].set(E0S)
    model = potential.terms["short_range"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
        model.feature_mean.uniform_(0.0, 0.1)
        model.feature_std.uniform_(0.5, 2.0)
        model.scale.fill_(1.7)
        model.shift.fill_(-0.3)
    return potential


@pytest.fixture
def trained_like(potential) -> atomnet.Potential:
    return _trained_like(potential, torch.float32)


def _energy_forces(potential, atoms):
    res = evaluate(potential, potential.graph(atoms), forces=True)
    return res.energy.detach(), res.forces


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(potential, ethanol, tmp_path, dtype):
    original = _trained_like(potential, dtype)
    loaded = atomnet.load(atomnet.save(original, tmp_path / "model.atomnet"))
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name].to(tensor.dtype), tensor), name
    e0, f0 = _energy_forces(original.double(), ethanol)
    e1, f1 = _energy_forces(loaded.double(), ethanol)
    assert torch.equal(e0, e1) and torch.equal(f0, f1)


def test_calculator_from_path(trained_like, ethanol, tmp_path):
    path = atomnet.save(trained_like, tmp_path / "model.atomnet")
    e_file = atomnet.Calculator(str(path)).get_potential_energy(ethanol)
    e_mem = atomnet.Calculator(trained_like).get_potential_energy(ethanol)
    assert e_file == pytest.approx(e_mem, abs=1e-10)


def test_header(trained_like, tmp_path):
    path = atomnet.save(trained_like, tmp_path / "model.atomnet", info={"epochs": 3})
    header = read_header(path)
    assert header["format"] == FORMAT
    assert header["atomnet_version"] == atomnet.__version__
    assert header["elements"] == ["H", "C", "O"]
    assert header["cutoff"] == 5.0
    assert header["units"] == units.MODEL_UNITS
    assert "e0s" not in header, "E0s have one source of truth: the e0 tensor"
    assert atomnet.load(path).reference.as_dict() == pytest.approx(E0S)
    terms = {t["name"]: t["type"] for t in header["potential"]["terms"]}
    assert terms == {"e0": "atomic_reference", "short_range": "bpnn"}
    assert header["info"] == {"epochs": 3}


def test_save_is_atomic_and_leaves_no_temporaries(potential, tmp_path):
    atomnet.save(potential, tmp_path / "model.atomnet")
    atomnet.save(potential, tmp_path / "model.atomnet")  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["model.atomnet"]


def _header_file(path: Path, potential, header: dict | str) -> Path:
    text = header if isinstance(header, str) else json.dumps(header)
    tensors = {k: v.contiguous() for k, v in potential.state_dict().items()}
    save_file(tensors, str(path), metadata={"atomnet": text})
    return path


def _good_header(potential, tmp_path) -> dict:
    return read_header(atomnet.save(potential, tmp_path / "good.atomnet"))


def test_wrong_format_string(potential, tmp_path):
    header = {**_good_header(potential, tmp_path), "format": "atomnet-model/99"}
    path = _header_file(tmp_path / "future.atomnet", potential, header)
    with pytest.raises(ModelFileError, match="unsupported model format 'atomnet-model/99'"):
        atomnet.load(path)


def test_corrupt_json_header(potential, tmp_path):
    path = _header_file(tmp_path / "bad_json.atomnet", potential, "{not json")
    with pytest.raises(ModelFileError, match="corrupt atomnet header"):
        atomnet.load(path)


def test_weights_not_matching_header(potential, tmp_path):
    header = _good_header(potential, tmp_path)
    header["potential"]["terms"][1]["hidden"] = [8]
    path = _header_file(tmp_path / "mismatch.atomnet", potential, header)
    with pytest.raises(ModelFileError, match="weights do not match"):
        atomnet.load(path)


def test_plain_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="without an atomnet header"):
        atomnet.load(path)


@pytest.mark.parametrize("cut", ["half", "tail"])
def test_truncated_file(potential, tmp_path, cut):
    data = atomnet.save(potential, tmp_path / "m.atomnet").read_bytes()
    path = tmp_path / "truncated.atomnet"
    path.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-16])
    with pytest.raises(ModelFileError, match="truncated.atomnet"):
        atomnet.load(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.atomnet"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ModelFileError):
        atomnet.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        atomnet.load(tmp_path / "nope.atomnet")


class _Payload:
    """Unpickling this would create ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_is_rejected_not_executed(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.atomnet"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"state": _Payload(marker)}))
    else:
        torch.save({"state": _Payload(marker)}, path)
    with pytest.raises(ModelFileError):
        atomnet.load(path)
    with pytest.raises(ModelFileError):
        atomnet.Calculator(str(path))
    assert not marker.exists(), "loading executed pickled code"


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle: pickle/dill/joblib loads, torch.load without weights_only=True."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = ast.unparse(node.func.value)
        name = node.func.attr
        kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if owner in {"pickle", "dill", "joblib", "cloudpickle"} and name in {"load", "loads"}:
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif owner == "torch" and name == "load" and kwargs.get("weights_only") != "True":
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name == "load" and kwargs.get("allow_pickle") == "True":
            found.append(f"line {node.lineno}: {owner}.load(allow_pickle=True)")
    return found


def test_unsafe_load_detector_works():
    code = "import torch, pickle\ntorch.load(f)\npickle.loads(b)\ntorch.load(f, weights_only=True)"
    assert len(_unsafe_loads(ast.parse(code))) == 2


def test_package_never_unpickles():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for hit in _unsafe_loads(ast.parse(path.read_text(), filename=str(path))):
            offenders.append(f"{path.relative_to(PACKAGE.parent)} {hit}")
        if "import pickle" in path.read_text():
            offenders.append(f"{path.relative_to(PACKAGE.parent)} imports pickle")
    assert not offenders, "code that can unpickle:\n" + "\n".join(offenders)
