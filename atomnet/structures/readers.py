"""Readers for labelled structures: extxyz, ASE databases, anything ``ase.io`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ase.io
from ase import Atoms

from .errors import StructureError
from .graph import get_label


def _read(path: Path, index: str) -> list[Atoms]:
    try:
        frames = ase.io.read(str(path), index=index)
    except StructureError:
        raise
    except Exception as exc:  # ase raises many types for malformed files
        raise StructureError(f"{path}: could not be read as a structure file ({exc})") from exc
    return frames if isinstance(frames, list) else [frames]


def read_structures(
    path: str | Path,
    index: str = ":",
    *,
    require: Sequence[str] = (),
) -> list[Atoms]:
    """Read every frame of ``path`` (extxyz, ``.db``, …) through ``ase.io``.

    Args:
        path: the file.  index: ASE index string (``":"`` for all frames).
        require: labels every frame must carry (``"energy"``, ``"forces"``, …).
    Raises:
        StructureError naming the file (and frame) when the file is missing,
        empty, malformed or a required label is absent.
    """
    path = Path(path)
    if not path.exists():
        raise StructureError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise StructureError(f"{path}: file is empty")
    frames = _read(path, index)
    if not frames:
        raise StructureError(f"{path}: file holds no structures")
    for k, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise StructureError(f"{path}, frame {k}: structure has no atoms")
        for key in require:
            if get_label(atoms, key) is None:
                raise StructureError(
                    f"{path}, frame {k}: missing '{key}' label "
                    f"(info keys {sorted(atoms.info)}, array keys {sorted(atoms.arrays)})"
                )
    return frames
