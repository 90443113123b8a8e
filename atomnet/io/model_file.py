"""One-file model format.

A ``.atomnet`` file is a safetensors file. Its metadata holds one entry,
``"atomnet"``, a JSON header with the format, atomnet version, elements,
cutoff (Å), units, the build recipe of every stage and term (their types and
hyper-parameters) and any training information. The tensors are the
potential's state dict; E0s live there only (the ``e0`` tensor). Loading
parses JSON and raw tensors only: no code is executed.

The loader distrusts the file. In order, before anything the size of the
model is allocated:

1. the header is parsed with bounded size and nesting and validated field by
   field (:mod:`atomnet.io.header`);
2. the recipe is built on the meta device (no memory); its recipe must equal
   the header's, its reach the header's ``cutoff``, its size a sane bound;
3. the tensor index of the file (names, shapes, dtypes, read without loading
   any tensor) must match the meta model's state dict.

Only then is the potential built for real and the tensors loaded. Every
problem is a :class:`ModelFileError` naming the file and the field or tensor.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import units
from ..errors import UsageError
from ..version import __version__
from .atomic import write_atomically
from .header import (
    FORMAT,
    MAX_VALUES,
    ModelFileError,
    first_difference,
    parse_header,
    validate_header,
)

__all__ = ["FORMAT", "ModelFileError", "load", "read_header", "save", "write_atomic"]

_KEY = "atomnet"

#: safetensors dtype names of the integer and boolean torch dtypes
_ST_DTYPES = {torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}
#: floating tensors may be stored in either model precision
_ST_FLOATS = ("F32", "F64")


def save(potential, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``potential`` to ``path`` atomically (temporary file, then rename).

    The header holds the recipe of every stage and term (:meth:`Potential.recipe`);
    the tensors are the state dict (E0s included: they are stored only there).
    The file is checked as :func:`load` would check it (header fields, the recipe
    rebuilt on the meta device, tensor shapes) before it is written: a potential
    whose parts do not rebuild from their recipes raises :class:`UsageError`.
    """
    path = Path(path)
    if info is not None and not isinstance(info, dict):
        raise UsageError(f"info must be a dict, got {type(info).__name__}")
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
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot save {path}: the header is not JSON-able ({exc})") from exc
    try:
        checked = validate_header(parse_header(text, str(path)), str(path))
        skeleton = _build(checked["potential"], path, meta=True)
        _check_rebuilt(skeleton, checked, path)
        index = {k: (list(v.shape), _st_dtype(v.dtype)) for k, v in tensors.items()}
        _check_index(index, skeleton, path)
    except ModelFileError as exc:
        raise UsageError(f"refusing to write a model file that could not be loaded: {exc}") from exc
    write_atomic(tensors, {_KEY: text}, path)
    return path


def _st_dtype(dtype: torch.dtype) -> str | None:
    """The safetensors name of a torch dtype (None for those a model file never holds)."""
    return {torch.float32: "F32", torch.float64: "F64", **_ST_DTYPES}.get(dtype)


def write_atomic(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write a safetensors file atomically (see :func:`~atomnet.io.atomic.write_atomically`)."""
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


@contextmanager
def _open(path: Path) -> Iterator:
    """The file's safetensors handle (index and metadata parsed, no tensor read)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: anything the parser objects to
        raise ModelFileError(f"{path}: not an atomnet model file ({exc})") from exc
    with handle as f:
        yield f


def _header(f, path: Path) -> dict:
    try:
        meta = f.metadata() or {}
    except Exception as exc:
        raise ModelFileError(f"{path}: not an atomnet model file ({exc})") from exc
    if _KEY not in meta:
        raise ModelFileError(f"{path}: safetensors file without an atomnet header")
    return validate_header(parse_header(meta[_KEY], str(path)), str(path))


def read_header(path: str | os.PathLike) -> dict:
    """The validated JSON header of a model file (no tensors are read)."""
    path = Path(path)
    with _open(path) as f:
        return _header(f, path)


def _meta_buildable(recipe: dict) -> bool:
    """False when a part's type cannot be built on the meta device (e3nn computes
    constants while building; ``Term.meta_buildable``). Such types have option bounds in
    :data:`~atomnet.io.header.OPTION_CHECKS`, so a CPU build stays small."""
    from ..terms import TERMS

    types = [entry.get("type") for section in ("stages", "terms")
             for entry in recipe.get(section, [])]
    return all(getattr(TERMS.get(t), "meta_buildable", True) for t in types)


def _build(recipe: dict, path: Path, meta: bool):
    """The potential of ``recipe``; on the meta device (no memory) when ``meta``."""
    from ..potential import Potential

    meta = meta and _meta_buildable(recipe)
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return Potential.from_recipe(recipe, where="potential")
    except UsageError as exc:
        raise ModelFileError(f"{path}: header field {exc}") from exc
    except Exception as exc:
        raise ModelFileError(f"{path}: the recorded model cannot be built ({exc})") from exc


def _check_rebuilt(potential, header: dict, path: Path) -> None:
    """The rebuilt potential's recipe and reach must be the header's."""
    try:
        rebuilt = json.loads(json.dumps(potential.recipe()))
    except Exception as exc:
        raise ModelFileError(f"{path}: the rebuilt model has no JSON recipe ({exc})") from exc
    diff = first_difference(header["potential"], rebuilt, "potential")
    if diff is not None:
        field, given, got = diff
        raise ModelFileError(
            f"{path}: header field '{field}' does not survive rebuilding the model: "
            f"{given!r} in the header, {got!r} in the rebuilt model"
        )
    if header["cutoff"] != potential.cutoff:
        raise ModelFileError(
            f"{path}: header field 'cutoff' is {header['cutoff']!r} Å but the recorded "
            f"model reaches {potential.cutoff!r} Å"
        )
    n = sum(t.numel() for t in itertools.chain(potential.parameters(), potential.buffers()))
    if n > MAX_VALUES:
        raise ModelFileError(
            f"{path}: the recorded model would hold {n} values (at most {MAX_VALUES})"
        )


def _file_index(f, path: Path) -> dict[str, tuple[list[int], str]]:
    """{name: (shape, safetensors dtype)} of the file's tensors, none of them read."""
    try:
        index = {}
        for name in f.keys():
            view = f.get_slice(name)
            index[name] = (list(view.get_shape()), view.get_dtype())
    except Exception as exc:
        raise ModelFileError(f"{path}: unreadable tensor index ({exc})") from exc
    return index


def _scalar_compatible(skeleton, name: str, shape: list[int]) -> bool:
    """A scalar in the file where the part now keeps one value per element, for a buffer
    the part lists in ``scalar_compatible`` (files from before per-element values)."""
    owner, _, leaf = name.rpartition(".")
    return shape == [] and leaf in getattr(skeleton.get_submodule(owner), "scalar_compatible", ())


def _check_index(index: dict, skeleton, path: Path) -> list[str]:
    """The tensors (names, shapes, dtypes) must be the meta model's state dict."""
    expected = skeleton.state_dict()
    prefix = f"{path}: weights do not match the recorded model:"
    missing = [n for n in expected if n not in index]
    if missing:
        raise ModelFileError(f"{prefix} tensor {missing[0]!r} is missing "
                             f"({len(missing)} missing in all)")
    extra = [n for n in index if n not in expected]
    if extra:
        raise ModelFileError(f"{prefix} tensor {extra[0]!r} is not part of the recorded model "
                             f"({len(extra)} extra in all)")
    for name, tensor in expected.items():
        shape, dtype = index[name]
        if shape != list(tensor.shape) and not _scalar_compatible(skeleton, name, shape):
            raise ModelFileError(f"{prefix} tensor {name!r} has shape {shape} in the file, "
                                 f"the recipe gives {list(tensor.shape)}")
        allowed = _ST_FLOATS if tensor.is_floating_point() else (_ST_DTYPES.get(tensor.dtype),)
        if dtype not in allowed:
            raise ModelFileError(f"{prefix} tensor {name!r} is {dtype} in the file, "
                                 f"the recipe needs {' or '.join(map(str, allowed))}")
    return list(expected)


def load(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the potential recorded in ``path`` and load its weights.

    Raises :class:`ModelFileError` for any missing, malformed or inconsistent
    file (see the module docstring for the checks and their order).
    """
    path = Path(path)
    with _open(path) as f:
        header = _header(f, path)
        recipe = header["potential"]
        skeleton = _build(recipe, path, meta=True)  # no memory: shapes and recipe only
        _check_rebuilt(skeleton, header, path)
        names = _check_index(_file_index(f, path), skeleton, path)
        del skeleton
        potential = _build(recipe, path, meta=False)  # non-persistent buffers initialised
        _check_rebuilt(potential, header, path)
        try:
            # fresh (aligned) memory: tensors viewed at arbitrary file offsets take other SIMD
            # paths in BLAS, so a loaded model would differ from the saved one in the last bit
            state = {k: f.get_tensor(k).clone() for k in names}
        except Exception as exc:
            raise ModelFileError(f"{path}: unreadable tensors ({exc})") from exc
    try:
        potential.load_state_dict(state, strict=True, assign=True)  # keep saved dtypes
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the recorded model ({exc})") from exc
    potential.header = header
    return potential.to(device)
