"""Every registered stage and term type survives a model-file round trip, bit for bit.

``EXAMPLES`` holds one example per registered type; a test asserts that every
type the atomnet package registers has one, so a new type must add its example
here (and so gets the round-trip test for free).
"""

from __future__ import annotations

import copy

import pytest
import torch
from ase.build import molecule

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.io import read_header
from atomnet.potential import Potential
from atomnet.terms import TERMS, Term, register

ELEMENTS = ["H", "C", "O"]
E0S = {"H": -13.6, "C": -1029.8, "O": -2041.3}
#: a unique name: the registry is global to the test session
CONSTANT = "test_model_file_terms.constant_energy"


@register(CONSTANT)
class ConstantEnergy(Term):
    """1 eV per atom and no parameters: the kind of term model files once dropped silently."""

    reads = (keys.SPECIES,)

    def __init__(self, elements):
        super().__init__()

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        positions = graph[keys.POSITIONS]
        return torch.ones(positions.shape[0], dtype=positions.dtype, device=positions.device)


#: every potential holds these; an example part of the same name replaces one
BASE = {
    "stages": [],
    "terms": [
        {"name": "e0", "type": "atomic_reference"},
        {"name": "short_range", "type": "bpnn", "hidden": [8], "n_radial": 4,
         "n_angular_radial": 2, "n_angle_sections": 2},
    ],
}

#: registered type → the parts (stages, terms) of an example using it
EXAMPLES = {
    "atomic_reference": {"terms": [{"name": "e0", "type": "atomic_reference"}]},
    "bpnn": {"terms": [{
        "name": "second_network", "type": "bpnn", "cutoff": 4.0, "angular_cutoff": 3.0,
        "n_radial": 6, "n_angular_radial": 3, "n_angle_sections": 4, "zeta": 8.0,
        "hidden": [6, 5], "activation": "tanh", "cutoff_fn": "cosine",
    }]},
    "equivariant": {"terms": [{
        "name": "message_passing", "type": "equivariant", "cutoff": 4.0, "size": "small",
        "channels": 4, "l_max": 1, "sh_l_max": 2, "correlation": 3, "layers": 2,
        "num_radial": 4, "radial_mlp": [8],
    }]},
    "fixed_charges": {"stages": [
        {"name": "charges", "type": "fixed_charges", "charges": {"H": 0.4, "C": -0.2, "O": -0.6}},
    ]},
    "learned_charges": {"stages": [
        {"name": "charges", "type": "learned_charges", "cutoff": 4.0, "angular_cutoff": 3.0,
         "n_radial": 4, "n_angular_radial": 2, "n_angle_sections": 2, "zeta": 8.0,
         "hidden": [5], "activation": "tanh"},
    ]},
    "coulomb": {
        "stages": [{"name": "charges", "type": "fixed_charges",
                    "charges": {"H": 0.4, "C": -0.2, "O": -0.6}}],
        "terms": [{"name": "coulomb", "type": "coulomb", "damping": "switch", "r_on": 1.5,
                   "r_off": 4.0, "method": "pme", "real_space_cutoff": 6.0}]},
    "d3bj": {"terms": [{"name": "dispersion", "type": "d3bj", "functional": "pbe",
                        "three_body": True, "cutoff": 8.0, "cn_cutoff": 6.0,
                        "three_body_cutoff": 5.0}]},
    "zbl": {"terms": [{"name": "repulsion", "type": "zbl", "inner": 0.3, "outer": 0.7}]},
    CONSTANT: {"terms": [{"name": "constant", "type": CONSTANT}]},
}


def _recipe(example: dict) -> dict:
    recipe = {"elements": ELEMENTS}
    for section in ("stages", "terms"):
        parts = {p["name"]: p for p in BASE[section]}
        parts.update({p["name"]: p for p in example.get(section, [])})
        recipe[section] = copy.deepcopy(list(parts.values()))
    return recipe


def _trained_like(potential: Potential, seed: int = 0) -> Potential:
    """Every weight and persistent buffer moved off its default (E0s set), in float64."""
    potential = potential.double()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for name, tensor in potential.state_dict().items():
            if tensor.is_floating_point() and not name.endswith(".e0"):
                tensor.mul_(1.0 + 0.05 * torch.rand_like(tensor))
    potential.reference.set(E0S)
    return potential


def _structure():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def _results(potential: Potential):
    return evaluate(potential.double(), potential.graph(_structure()), forces=True)


def test_every_registered_type_has_an_example():
    package_types = {n for n, cls in TERMS.items() if cls.__module__.split(".")[0] == "atomnet"}
    missing = sorted(package_types - set(EXAMPLES))
    assert not missing, f"add an example for the new term type(s) {missing} to EXAMPLES"
    assert CONSTANT in TERMS


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_round_trip_of_every_type(type_name, tmp_path):
    recipe = _recipe(EXAMPLES[type_name])
    original = _trained_like(Potential.from_recipe(recipe))
    parts = original.recipe()["stages"] + original.recipe()["terms"]
    assert type_name in {p["type"] for p in parts}

    path = atomnet.save(original, tmp_path / f"{type_name}.atomnet")
    loaded = atomnet.load(path)

    assert read_header(path)["potential"] == original.recipe() == loaded.recipe()
    assert loaded.term_names == original.term_names
    assert loaded.stage_names == original.stage_names
    assert loaded.state_dict().keys() == original.state_dict().keys()
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    before, after = _results(original), _results(loaded)
    assert torch.equal(before.energy, after.energy)
    assert torch.equal(before.forces, after.forces)
    assert before.contributions.keys() == after.contributions.keys()
    for name in before.contributions:
        assert torch.equal(before.contributions[name], after.contributions[name]), name
    if before.charges is not None:
        assert torch.equal(before.charges, after.charges)
        assert torch.equal(before.dipole, after.dipole)


def test_parameterless_term_survives_the_round_trip(tmp_path):
    """The original bug: a term without tensors left no trace in the file and vanished."""
    potential = _trained_like(Potential.from_recipe(_recipe(EXAMPLES[CONSTANT])))
    assert not list(potential.terms["constant"].state_dict())
    loaded = atomnet.load(atomnet.save(potential, tmp_path / "constant.atomnet"))
    assert "constant" in loaded.term_names
    before, after = _results(potential), _results(loaded)
    n_atoms = len(_structure())
    assert torch.equal(after.contributions["constant"], torch.ones(n_atoms, dtype=torch.float64))
    assert torch.equal(before.energy, after.energy)
    without = _results(Potential({n: t for n, t in loaded.terms.items() if n != "constant"},
                                 ELEMENTS))
    assert torch.allclose(after.energy - without.energy,
                          torch.tensor([float(n_atoms)], dtype=torch.float64))


@register("test_model_file_terms.forgetful")
class Forgetful(Term):
    """A term whose recipe forgets its width: its file could not be loaded."""

    def __init__(self, elements, width: int = 3):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(width))

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(graph[keys.POSITIONS][:, 0]) + self.weight.sum()


def test_save_refuses_a_potential_that_does_not_rebuild(tmp_path):
    potential = Potential({"forgetful": Forgetful(ELEMENTS, width=5)}, ELEMENTS)
    with pytest.raises(atomnet.errors.UsageError, match=r"refusing to write a model file that "
                       r"could not be loaded: .*'terms.forgetful.weight' has shape \[5\]"):
        atomnet.save(potential, tmp_path / "forgetful.atomnet")
    assert not list(tmp_path.iterdir())
