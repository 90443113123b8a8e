"""The loader distrusts the file: every malformed model file is a ModelFileError naming the field.

Covers the header schema (missing keys, wrong types, bounds, units, elements,
unknown types and options, nesting, duplicates), the weights checked against
the recipe built on the meta device, truncated and garbage files, a seeded fuzz
of header mutations and truncations, and the guarantee that a tiny file whose
header asks for a huge network is rejected before the network is allocated.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import atomnet
from atomnet.io import ModelFileError, read_header
from atomnet.potential import Potential

REPO = Path(atomnet.__file__).resolve().parents[1]
ELEMENTS = ["H", "C", "O"]
RECIPE = {
    "elements": ELEMENTS,
    "stages": [{"name": "charges", "type": "fixed_charges",
                "charges": {"H": 0.4, "C": -0.2, "O": -0.6}}],
    "terms": [
        {"name": "e0", "type": "atomic_reference"},
        {"name": "short_range", "type": "bpnn", "hidden": [4, 4], "n_radial": 3,
         "n_angular_radial": 2, "n_angle_sections": 2},
    ],
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(path, header, tensors) of a small valid model file."""
    potential = Potential.from_recipe(RECIPE)
    potential.reference.set({"H": -13.6, "C": -1029.8, "O": -2041.3})
    path = atomnet.save(potential, tmp_path_factory.mktemp("good") / "good.atomnet")
    return path, read_header(path), load_file(str(path))


def _write(path: Path, header: dict | str, tensors: dict[str, torch.Tensor]) -> Path:
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(tensors, str(path), metadata={"atomnet": text})
    return path


def _set(obj, keys, value):
    for key in keys[:-1]:
        obj = obj[key]
    obj[keys[-1]] = value


def _delete(obj, keys):
    for key in keys[:-1]:
        obj = obj[key]
    del obj[keys[-1]]


BPNN = ("potential", "terms", 1)
#: (id, keys to set (or delete: value DELETE), value, expected message)
DELETE = object()
CASES = [
    ("no potential", ("potential",), DELETE, r"header field 'potential' is missing"),
    ("no elements", ("elements",), DELETE, r"header field 'elements' is missing"),
    ("no cutoff", ("cutoff",), DELETE, r"header field 'cutoff' is missing"),
    ("no units", ("units",), DELETE, r"header field 'units' is missing"),
    ("no version", ("atomnet_version",), DELETE, r"'atomnet_version' is missing"),
    ("no format", ("format",), DELETE, r"unsupported model format None"),
    ("no terms", ("potential", "terms"), DELETE, r"'potential.terms' is missing"),
    ("no stages", ("potential", "stages"), DELETE, r"'potential.stages' is missing"),
    ("no recipe elements", ("potential", "elements"), DELETE, r"'potential.elements' is missing"),
    ("no type", (*BPNN, "type"), DELETE, r"'potential.terms\[1\].type' is missing"),
    ("no name", (*BPNN, "name"), DELETE, r"'potential.terms\[1\].name' is missing"),
    ("cutoff inf", ("cutoff",), float("inf"), r"'cutoff' must be a finite number ≥ 0"),
    ("cutoff nan", ("cutoff",), float("nan"), r"'cutoff' must be a finite number"),
    ("cutoff -1", ("cutoff",), -1, r"'cutoff' must be a finite number ≥ 0 and ≤ 100, got -1"),
    ("cutoff string", ("cutoff",), "5", r"'cutoff' must be a finite number .*, got '5'"),
    ("cutoff bool", ("cutoff",), True, r"'cutoff' must be a finite number"),
    ("cutoff disagrees", ("cutoff",), 4.0, r"'cutoff' is 4.0 Å but the recorded model reaches 5.0"),
    ("elements string", ("elements",), "HCO", r"'elements' must be a non-empty list"),
    ("elements empty", ("elements",), [], r"'elements' must be a non-empty list"),
    ("unknown element", ("elements",), ["H", "Xx", "O"], r"'elements\[1\]' must be an element"),
    ("element not str", ("elements",), ["H", 6, "O"], r"'elements\[1\]' must be an element"),
    ("duplicate element", ("elements",), ["H", "C", "H"], r"'elements' must be a list of distinct"),
    ("Cu on HCO model", ("elements",), ["Cu"],
     r"'potential.elements' must be equal to the header's elements \['Cu'\]"),
    ("energy in Hartree", ("units", "energy"), "Hartree",
     r"header field 'units.energy' must be 'eV', got 'Hartree'"),
    ("length in Bohr", ("units", "length"), "Bohr", r"'units.length' must be 'Å'"),
    ("unit missing", ("units", "time"), DELETE, r"'units.time' is missing"),
    ("unit extra", ("units", "temperature"), "K", r"'units.temperature' is not a known field"),
    ("units not object", ("units",), "eV", r"'units' must be a JSON object"),
    ("info not object", ("info",), [1], r"'info' must be a JSON object"),
    ("top-level e0s", ("e0s",), {"H": -13.6, "C": -1029.8, "O": -2041.3},
     r"'e0s' is not a known field \(E0s are stored only in the e0 tensor"),
    ("recipe e0s", ("potential", "terms", 0, "e0s"), {"H": 0.0, "C": 0.0, "O": 0.0},
     r"'potential.terms\[0\].e0s' is not allowed: E0s are stored only in the e0 tensor"),
    ("unknown top field", ("extra",), 1, r"'extra' is not a known field"),
    ("recipe not object", ("potential",), [], r"'potential' must be a JSON object"),
    ("terms not list", ("potential", "terms"), {}, r"'potential.terms' must be a list"),
    ("terms empty", ("potential", "terms"), [], r"'potential.terms' must be a non-empty list"),
    ("part not object", (*BPNN,), "bpnn", r"'potential.terms\[1\]' must be a JSON object"),
    ("unknown type", (*BPNN, "type"), "transformer",
     r"'potential.terms\[1\].type' must be one of \[.*'bpnn'"),
    ("unknown option", (*BPNN, "depth"), 3,
     r"'potential.terms\[1\].depth' is not an option of type 'bpnn'"),
    ("hidden abc", (*BPNN, "hidden"), "abc",
     r"model.atomnet: header field 'potential.terms\[1\].hidden' must be a list of positive "
     r"integers .*, got 'abc'"),
    ("hidden zero", (*BPNN, "hidden"), [0], r"'potential.terms\[1\].hidden' must be a list"),
    ("hidden float", (*BPNN, "hidden"), [4.5], r"'potential.terms\[1\].hidden' must be a list"),
    ("hidden bool", (*BPNN, "hidden"), [True], r"'potential.terms\[1\].hidden' must be a list"),
    ("hidden too wide", (*BPNN, "hidden"), [70000], r"each ≤ 65536"),
    ("hidden too many values", (*BPNN, "hidden"), [60000, 60000],
     r"the recorded model would hold \d+ values \(at most 200000000\)"),
    ("n_radial huge", (*BPNN, "n_radial"), 10**9,
     r"'potential.terms\[1\].n_radial' must be an integer from 1 to 1024"),
    ("zeta string", (*BPNN, "zeta"), "14", r"'potential.terms\[1\].zeta' must be a finite number"),
    ("activation", (*BPNN, "activation"), "relu",
     r"'potential.terms\[1\].activation' must be one of"),
    ("option missing", (*BPNN, "zeta"), DELETE,
     r"'potential.terms\[1\].zeta' does not survive rebuilding the model: '<missing>' in the "
     r"header, 14.1 in the rebuilt model"),
    ("charges not object", ("potential", "stages", 0, "charges"), [0.4],
     r"'potential.stages\[0\].charges' must be a JSON object"),
    ("charge string", ("potential", "stages", 0, "charges", "H"), "+",
     r"'potential.stages\[0\].charges.H' must be a finite number"),
    ("charges miss O", ("potential", "stages", 0, "charges", "O"), DELETE,
     r"'potential.stages\[0\]' \(type 'fixed_charges'\) cannot be built: fixed charges need"),
    ("duplicate names", (*BPNN, "name"), "e0",
     r"'potential.terms\[1\].name' repeats the part name 'e0'"),
    ("stage and term same name", (*BPNN, "name"), "charges", r"repeats the part name 'charges'"),
    ("dotted name", (*BPNN, "name"), "short.range", r"must be a name without '.'"),
    ("stage as term", ("potential", "terms", 0), {"name": "q", "type": "fixed_charges",
     "charges": {"H": 0.0, "C": 0.0, "O": 0.0}},
     r"header field 'potential' does not make a potential: energy term 'q' is of kind 'stage'"),
]


@pytest.mark.parametrize(("keys", "value", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_header_field(good, tmp_path, keys, value, message):
    path, header, tensors = good
    header = copy.deepcopy(header)
    if value is DELETE:
        _delete(header, keys)
    else:
        _set(header, keys, value)
    bad = _write(tmp_path / "model.atomnet", header, tensors)
    with pytest.raises(ModelFileError, match=message):
        atomnet.load(bad)


def test_cu_on_both_elements_is_a_shape_mismatch(good, tmp_path):
    path, header, tensors = good
    header = copy.deepcopy(header)
    header["elements"] = header["potential"]["elements"] = ["Cu"]
    header["potential"]["stages"][0]["charges"] = {"Cu": 0.0}
    bad = _write(tmp_path / "cu.atomnet", header, tensors)
    with pytest.raises(ModelFileError, match=r"weights do not match the recorded model: tensor "
                       r"'terms.e0.e0' has shape \[3\] in the file, the recipe gives \[1\]"):
        atomnet.load(bad)


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", r"a JSON list, not an object"),
    ("null", r"a JSON NoneType, not an object"),
    ('"model"', r"a JSON str, not an object"),
    ("", r"corrupt atomnet header"),
    ("{" * 40 + "}" * 40, r"nested 40 levels deep; at most 32"),
    ('{"info": ' + "[" * 100_000 + "]" * 100_000 + "}", r"nested 100001 levels deep"),
    ('{"info": "' + "[" * 100 + '"}', r"unsupported model format"),  # brackets in strings
    ('{"format": "atomnet-model/1", "format": "x"}', r"duplicate key 'format'"),
    ('{"cutoff": ' + "9" * 5000 + "}", r"corrupt atomnet header"),  # > 4300 digits
], ids=["list", "null", "string", "empty", "depth 40", "depth 100001", "brackets in string",
        "duplicate key", "huge integer"])
def test_header_not_a_sane_json_object(good, tmp_path, text, message):
    bad = _write(tmp_path / "model.atomnet", text, good[2])
    with pytest.raises(ModelFileError, match=message):
        atomnet.load(bad)


def test_recursion_error_is_caught(good, tmp_path, monkeypatch):
    """Past the depth pre-check (disabled here), json's RecursionError still becomes ours."""
    from atomnet.io import header as header_module

    monkeypatch.setattr(header_module, "MAX_DEPTH", 10**9)
    bad = _write(tmp_path / "deep.atomnet", "[" * 200_000 + "]" * 200_000, good[2])
    with pytest.raises(ModelFileError, match="corrupt atomnet header"):
        atomnet.load(bad)


@pytest.mark.parametrize("change", ["missing", "extra", "int as float", "half precision"])
def test_tensors_not_matching_a_valid_header(good, tmp_path, change):
    path, header, tensors = good
    tensors = dict(tensors)
    if change == "missing":
        del tensors["terms.short_range.scale"]
        message = r"tensor 'terms.short_range.scale' is missing"
    elif change == "extra":
        tensors["terms.short_range.bonus"] = torch.zeros(2)
        message = r"tensor 'terms.short_range.bonus' is not part of the recorded model"
    elif change == "int as float":
        tensors["terms.short_range.descriptor.pair_index"] = torch.zeros(3, 3)
        message = r"'terms.short_range.descriptor.pair_index' is F32 in the file, .* needs I64"
    else:
        tensors["terms.short_range.scale"] = torch.tensor(1.0, dtype=torch.float16)
        message = r"'terms.short_range.scale' is F16 in the file, the recipe needs F32 or F64"
    bad = _write(tmp_path / "model.atomnet", header, tensors)
    with pytest.raises(ModelFileError, match=message):
        atomnet.load(bad)


def test_truncated_at_every_kind_of_offset(good, tmp_path):
    data = good[0].read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    offsets = {0, 1, 4, 7, 8, 9, 20, header_end // 2, header_end - 1, header_end,
               header_end + 1, header_end + 4, (header_end + len(data)) // 2, len(data) - 1}
    for n in sorted(offsets):
        path = tmp_path / f"cut{n}.atomnet"
        path.write_bytes(data[:n])
        with pytest.raises(ModelFileError, match=re.escape(path.name)):
            atomnet.load(path)


def test_garbage_files(tmp_path):
    rng = random.Random(0)
    blobs = [b"", b"\0" * 64, bytes(rng.randrange(256) for _ in range(3000)),
             (100).to_bytes(8, "little") + b"{" * 100,  # header length fits, JSON does not
             (2**62).to_bytes(8, "little") + b"{}",  # absurd header length
             (2).to_bytes(8, "little") + b"{}",  # valid, empty safetensors file
             b'PK\x03\x04' + bytes(60)]  # a zip (what torch.save writes)
    for k, blob in enumerate(blobs):
        path = tmp_path / f"garbage{k}.atomnet"
        path.write_bytes(blob)
        with pytest.raises(ModelFileError):
            atomnet.load(path)


def test_a_directory_is_not_a_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        atomnet.load(tmp_path)


# --- fuzz ---------------------------------------------------------------------------
WEIRD = [None, True, False, 0, -1, 1, 3, 2**63, 10**30, -1e-300, 1e308, float("nan"),
         float("inf"), "", "abc", "H", "bpnn", "fixed_charges", "atomic_reference", [], {},
         [[[[]]]], [1, "a"], [5000, 5000], [65536, 65536], [4], {"type": "bpnn"},
         {"name": "x", "type": "bpnn"}, "x" * 500, ["H", "C", "O"], ["Cu"], 5.0, 4.0]


def _nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _places(obj, prefix=()):
    """Every (container path, key) in a JSON value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix, key
            yield from _places(value, (*prefix, key))
    elif isinstance(obj, list):
        for k, value in enumerate(obj):
            yield prefix, k
            yield from _places(value, (*prefix, k))


def _mutate(header: dict, rng: random.Random) -> list[str]:
    done = []
    for _ in range(rng.randint(1, 3)):
        places = list(_places(header))
        where, key = rng.choice(places)
        container = header
        for k in where:
            container = container[k]
        action = rng.random()
        if action < 0.3:
            del container[key]
            done.append(f"delete {[*where, key]}")
        elif action < 0.8:
            value = rng.choice(WEIRD + [_nested(rng.randint(1, 40))])
            container[key] = copy.deepcopy(value)
            done.append(f"set {[*where, key]} = {str(value)[:40]}")
        elif action < 0.9 and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
            done.append(f"duplicate {[*where, key]}")
        else:
            target = container[key] if isinstance(container[key], dict) else container
            if isinstance(target, dict):
                target[rng.choice(["e0s", "hidden", "cutoff", "zz", "name"])] = rng.choice(WEIRD)
                done.append(f"add a key under {[*where, key]}")
    return done


def test_fuzz_header_mutations_and_truncations(good, tmp_path):
    """Each mutated file either loads or raises ModelFileError; nothing else escapes."""
    path, header, tensors = good
    rng = random.Random(1234)
    outcomes = {"loaded": 0, "rejected": 0}

    def attempt(file: Path, what: str) -> None:
        try:
            atomnet.load(file)
            outcomes["loaded"] += 1
        except ModelFileError:
            outcomes["rejected"] += 1
        except Exception as exc:  # noqa: BLE001 (the point of the test)
            pytest.fail(f"{what}: {type(exc).__name__} escaped: {exc}")

    for k in range(1500):
        mutated = copy.deepcopy(header)
        what = _mutate(mutated, rng)
        attempt(_write(tmp_path / "fuzz.atomnet", mutated, tensors), f"mutation {k} {what}")
    data = path.read_bytes()
    for k in range(60):
        cut = data[: rng.randrange(len(data))]
        if rng.random() < 0.5 and cut:  # and flip a byte
            i = rng.randrange(len(cut))
            cut = cut[:i] + bytes([cut[i] ^ (1 << rng.randrange(8))]) + cut[i + 1:]
        (tmp_path / "cut.atomnet").write_bytes(cut)
        attempt(tmp_path / "cut.atomnet", f"truncation {k} at {len(cut)}")
    assert outcomes["rejected"] > 1200, outcomes


# --- no allocation before the checks ----------------------------------------------
_PEAK_SCRIPT = """
import resource, sys
import atomnet, torch
from atomnet.io import ModelFileError
atomnet.load(sys.argv[1])  # warm up: imports and meta-device kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    atomnet.load(sys.argv[2])
    print("LOADED")
except ModelFileError as exc:
    print("REJECTED", exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("GROWTH_KIB", after - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_huge_network_rejected_before_allocation(good, tmp_path):
    """A small file whose header asks for hidden [5000, 5000] (~300 MiB of weights)."""
    path, header, tensors = good
    header = copy.deepcopy(header)
    header["potential"]["terms"][1]["hidden"] = [5000, 5000]
    bad = _write(tmp_path / "huge.atomnet", header, tensors)
    assert bad.stat().st_size < 20_000
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(bad)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "REJECTED" in done.stdout and "has shape" in done.stdout, done.stdout
    growth_mib = int(done.stdout.split("GROWTH_KIB")[1]) / 1024
    assert growth_mib < 50, f"peak memory grew by {growth_mib:.0f} MiB while rejecting"
