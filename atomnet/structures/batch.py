"""Batching graph dicts and moving them between devices and dtypes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys

#: fields holding atom indices / edge indices, offset when concatenated
_ATOM_INDEX_FIELDS = {keys.EDGE_INDEX}
_EDGE_INDEX_FIELDS = {keys.TRIPLET_EDGES}
#: fields concatenated along dim 1 (others along dim 0)
_DIM1_FIELDS = {keys.EDGE_INDEX, keys.TRIPLET_EDGES}


def _offsets(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for n in sizes:
        out.append(total)
        total += n
    return out


def collate(graphs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch; atom indices and ``batch`` are offset.

    Every graph must carry the same fields (labels included).
    """
    if len(graphs) == 1:
        return dict(graphs[0])
    fields = set(graphs[0])
    for g in graphs[1:]:
        if set(g) != fields:
            missing = fields.symmetric_difference(g)
            raise ValueError(f"cannot batch graphs with different fields: {sorted(missing)}")
    atom_offsets = _offsets([len(g[keys.POSITIONS]) for g in graphs])
    if keys.EDGE_INDEX in fields:
        edge_offsets = _offsets([g[keys.EDGE_INDEX].shape[1] for g in graphs])
    out: dict[str, torch.Tensor] = {}
    for key in fields:
        parts = [g[key] for g in graphs]
        if key in _ATOM_INDEX_FIELDS:
            parts = [p + o for p, o in zip(parts, atom_offsets)]
        elif key in _EDGE_INDEX_FIELDS:
            parts = [p + o for p, o in zip(parts, edge_offsets)]
        elif key == keys.BATCH:
            parts = [p + k for k, p in enumerate(parts)]
        out[key] = torch.cat(parts, dim=1 if key in _DIM1_FIELDS else 0)
    return out


def to_device(
    graph: dict[str, torch.Tensor], device: torch.device | str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A new dict with float fields cast to ``dtype`` and everything on ``device``.

    Integer shifts keep their integer values but become ``dtype`` (they are
    multiplied with the cell).
    """
    out = {}
    for key, value in graph.items():
        if value.is_floating_point():
            out[key] = value.to(device=device, dtype=dtype)
        else:
            out[key] = value.to(device=device)
    return out
