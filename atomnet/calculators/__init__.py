"""ASE calculators: one potential, or a committee of them (mean and spread).

``TorchSimModel`` (a TorchSim model, :mod:`atomnet.calculators.torchsim`) is imported
on first use, so that atomnet itself never imports TorchSim.
"""

from .ase_calculator import Calculator
from .committee import CommitteeCalculator, read_committee

__all__ = ["Calculator", "CommitteeCalculator", "read_committee"]


def __getattr__(name: str):
    if name == "TorchSimModel":  # lazy: needs the optional package torch-sim-atomistic
        from .torchsim import TorchSimModel

        return TorchSimModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
