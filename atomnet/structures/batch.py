"""Batching graph dicts and moving them between devices and dtypes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys

#: how fields are batched, by base name (:func:`keys.base_name`): the dimension they are
#: concatenated along, and what their values index ("atoms", "edges" of their own pair
#: list, "structures"), which is offset. Any other field: dim 0, no offset.
BATCHING: dict[str, tuple[int, str | None]] = {
    keys.EDGE_INDEX: (1, "atoms"),
    keys.TRIPLET_EDGES: (1, "edges"),
    keys.BATCH: (0, "structures"),
}


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
    n_atoms = _offsets([len(g[keys.POSITIONS]) for g in graphs])
    out: dict[str, torch.Tensor] = {}
    for key in fields:
        dim, indexes = BATCHING.get(keys.base_name(key), (0, None))
        parts = [g[key] for g in graphs]
        if indexes == "atoms":
            offsets = n_atoms
        elif indexes == "edges":
            index = keys.sibling(key, keys.EDGE_INDEX)
            offsets = _offsets([g[index].shape[1] for g in graphs])
        elif indexes == "structures":
            offsets = list(range(len(graphs)))
        else:
            offsets = None
        if offsets is not None:
            parts = [p + o for p, o in zip(parts, offsets)]
        out[key] = torch.cat(parts, dim=dim)
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
