"""The error raised for bad structures or data files."""

from ..errors import AtomnetError


class StructureError(AtomnetError, ValueError):
    """A structure or data file cannot be used; the message names file and frame."""


def where(source: str | None, index: int | None) -> str:
    """Human-readable location of a frame, e.g. ``'train.xyz, frame 12'``."""
    parts = []
    if source:
        parts.append(str(source))
    if index is not None:
        parts.append(f"frame {index}")
    return ", ".join(parts) if parts else "structure"
