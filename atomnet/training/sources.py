"""Structure files read by index, without loading them whole: ASE databases and extxyz.

A source holds only an index of its file (the row ids of an ASE database, the
byte offset of each extxyz frame) and reads one structure when asked, so that
it can be copied into DataLoader workers and its memory does not grow with the
file. Each process opens the file itself (a forked worker never shares the
parent's database connection or file handle).

* ``.db``: an ASE SQLite database (:func:`ase.db.connect`). A row becomes Atoms
  as ``ase.io.read`` makes it (labels from the row's calculator results), plus
  its key-value pairs in ``atoms.info`` and its data (per-atom arrays into
  ``atoms.arrays``, the rest into ``atoms.info``), so that labels and
  ``charge``/``weight`` stored under other names can be named by
  ``data.energy_key`` etc.
* ``.xyz``/``.extxyz``: frames are parsed one at a time from their byte range.
* anything else ``ase.io`` reads: read whole into memory (as Atoms; graphs
  are still built on demand).
"""

from __future__ import annotations

import io
import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import ase.db
import ase.io
import numpy as np
from ase import Atoms

from ..structures import StructureError, read_structures

DB_SUFFIXES = (".db",)
XYZ_SUFFIXES = (".xyz", ".extxyz")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise StructureError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise StructureError(f"{path}: file is empty")


class DbSource:
    """Rows of an ASE SQLite database, by position in id order."""

    def __init__(self, path: Path) -> None:
        _check_file(path)
        self.path = path
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                ids = [r[0] for r in con.execute("SELECT id FROM systems ORDER BY id")]
        except sqlite3.Error as exc:
            raise StructureError(f"{path}: not an ASE database ({exc})") from exc
        if not ids:
            raise StructureError(f"{path}: file holds no structures")
        self.ids = np.asarray(ids, dtype=np.int64)
        self._db, self._pid, self._stack = None, None, None

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        return {"path": self.path, "ids": self.ids}

    def __setstate__(self, state: dict) -> None:
        self.path, self.ids = state["path"], state["ids"]
        self._db, self._pid, self._stack = None, None, None

    def _connection(self):
        """This process's open database (one connection kept open: 4× faster reads)."""
        if self._pid != os.getpid():
            self._stack = ExitStack()
            self._db = self._stack.enter_context(ase.db.connect(self.path, type="db"))
            self._pid = os.getpid()
        return self._db

    def where(self, k: int) -> str:
        return f"{self.path}, frame {k} (row id {int(self.ids[k])})"

    def read(self, k: int) -> Atoms:
        """Structure ``k`` (0-based position in id order)."""
        return row_atoms(self._connection().get(id=int(self.ids[k])))

    def iterate(self) -> Iterator[Atoms]:
        """Every structure in id order (one query: faster than :meth:`read` in turn)."""
        for k, row in enumerate(self._connection().select(sort="id")):
            if row.id != self.ids[k]:
                raise StructureError(f"{self.path}: changed while being read (row id {row.id})")
            yield row_atoms(row)


def row_atoms(row) -> Atoms:
    """Atoms of an ASE database row: ``row.toatoms()`` (calculator results as labels)
    plus its key-value pairs and data in ``info`` (per-atom data in ``arrays``)."""
    atoms = row.toatoms()
    atoms.info.update(row.key_value_pairs)
    for name, value in (row.get("data") or {}).items():
        if isinstance(value, np.ndarray) and value.ndim and len(value) == len(atoms):
            atoms.new_array(name, value)
        else:
            atoms.info[name] = value
    return atoms


class XyzSource:
    """Frames of an (ext)xyz file, by byte offsets found in one pass over its lines."""

    def __init__(self, path: Path) -> None:
        _check_file(path)
        self.path = path
        self.offsets = _xyz_offsets(path)
        if len(self.offsets) < 2:
            raise StructureError(f"{path}: file holds no structures")
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getstate__(self) -> dict:
        return {"path": self.path, "offsets": self.offsets}

    def __setstate__(self, state: dict) -> None:
        self.path, self.offsets = state["path"], state["offsets"]
        self._file, self._pid = None, None

    def where(self, k: int) -> str:
        return f"{self.path}, frame {k}"

    def read(self, k: int) -> Atoms:
        if self._pid != os.getpid():
            self._file, self._pid = open(self.path, "rb"), os.getpid()  # noqa: SIM115
        start, stop = int(self.offsets[k]), int(self.offsets[k + 1])
        self._file.seek(start)
        text = self._file.read(stop - start).decode()
        try:
            return ase.io.read(io.StringIO(text), index=0, format="extxyz")
        except Exception as exc:  # ase raises many types for malformed frames
            raise StructureError(f"{self.where(k)}: could not be read ({exc})") from exc

    def iterate(self) -> Iterator[Atoms]:
        for k in range(len(self)):
            yield self.read(k)


def _xyz_offsets(path: Path) -> np.ndarray:
    """(n + 1,) byte offsets of the frames of an xyz file (and of its end)."""
    offsets = []
    with open(path, "rb") as f:
        line_no = 0
        while True:
            start = f.tell()
            line = f.readline()
            line_no += 1
            if not line:
                break
            if not line.strip():
                continue
            try:
                n = int(line.split()[0])
            except ValueError:
                raise StructureError(
                    f"{path}, line {line_no}: expected the number of atoms of a frame, "
                    f"got {line[:40]!r}"
                ) from None
            offsets.append(start)
            for _ in range(n + 1):
                if not f.readline():
                    raise StructureError(f"{path}: frame {len(offsets) - 1} is cut short")
            line_no += n + 1
        offsets.append(f.tell())
    return np.asarray(offsets, dtype=np.int64)


class MemorySource:
    """Any other format ``ase.io`` reads: all frames held as Atoms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = read_structures(path)

    def __len__(self) -> int:
        return len(self.frames)

    def where(self, k: int) -> str:
        return f"{self.path}, frame {k}"

    def read(self, k: int) -> Atoms:
        return self.frames[k]  # not .copy(): that drops the calculator holding the labels

    def iterate(self) -> Iterator[Atoms]:
        for k in range(len(self)):
            yield self.read(k)


Source = DbSource | XyzSource | MemorySource


def is_database(path: str | Path) -> bool:
    """Whether ``path`` is read as an ASE database (by its suffix)."""
    return Path(path).suffix.lower() in DB_SUFFIXES


def open_source(path: str | Path) -> Source:
    """The source reading ``path`` by index, chosen by its suffix (see the module docstring)."""
    path = Path(path)
    if is_database(path):
        return DbSource(path)
    if path.suffix.lower() in XYZ_SUFFIXES:
        return XyzSource(path)
    return MemorySource(path)
