"""One-file model format.

A ``.atomnet`` file is a safetensors file. Its metadata holds one entry,
``"atomnet"``, a JSON header with the format, atomnet version, elements,
cutoff (Å), units, E0s (eV), the build recipe (hyper-parameters) and any
training information. The tensors are the potential's state dict. Loading
parses JSON and raw tensors only: no code is executed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import units
from ..errors import AtomnetError
from ..version import __version__

FORMAT = "atomnet-model/1"
_KEY = "atomnet"


class ModelFileError(AtomnetError, ValueError):
    """A model file is missing, malformed or incompatible."""


def save(potential, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``potential`` to ``path`` atomically (temporary file, then rename).

    The header holds the recipe of every stage and term (:meth:`Potential.recipe`);
    the tensors are the state dict (E0s included: they are stored only there).
    """
    path = Path(path)
    header = {
        "format": FORMAT,
        "atomnet_version": __version__,
        "elements": potential.elements,
        "cutoff": potential.cutoff,
        "units": units.MODEL_UNITS,
        "potential": potential.recipe(),
        "info": info or {},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in potential.state_dict().items()}
    write_atomic(tensors, {_KEY: json.dumps(header)}, path)
    return path


def write_atomic(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write a safetensors file atomically: a temporary file beside it, then a rename.

    A crash mid-write leaves the previous file intact. The file gets the usual
    permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a model file (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not an atomnet model file ({exc})") from exc
    if _KEY not in meta:
        raise ModelFileError(f"{path}: safetensors file without an atomnet header")
    try:
        header = json.loads(meta[_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: corrupt atomnet header ({exc})") from exc
    if header.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: unsupported model format {header.get('format')!r} (expected {FORMAT})"
        )
    return header


def load(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the potential recorded in ``path`` and load its weights."""
    from ..potential import Potential

    header = read_header(path)
    potential = Potential.from_recipe(header["potential"])
    with safe_open(str(path), framework="pt", device="cpu") as f:
        # fresh (aligned) memory: tensors viewed at arbitrary file offsets take other SIMD
        # paths in BLAS, so a loaded model would differ from the saved one in the last bit
        state = {k: f.get_tensor(k).clone() for k in f.keys()}
    try:
        potential.load_state_dict(state, strict=True, assign=True)  # keep saved dtypes
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the recorded model ({exc})") from exc
    potential.header = header
    return potential.to(device)
