"""Structures: ASE Atoms → graph dicts, validation, readers and batching."""

from .batch import collate, to_device
from .device_graph import device_graph
from .errors import StructureError
from .graph import atoms_to_graph, get_label
from .readers import read_structures
from .validate import check_elements, validate_atoms

__all__ = [
    "StructureError",
    "atoms_to_graph",
    "check_elements",
    "collate",
    "device_graph",
    "get_label",
    "read_structures",
    "to_device",
    "validate_atoms",
]
