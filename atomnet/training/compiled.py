"""A training step compiled by ``torch.compile`` (``training.compile: true``).

Small structures spend most of an eager step in per-operation overhead: an ethanol
batch of the equivariant model runs ~10,000 small operations forward, backward and
double backward. :class:`CompiledStep` traces the whole step, loss and parameter
gradients included (:func:`atomnet.derivatives.fixed_shape.loss_gradients`), into one
Inductor graph, which ran 3.4× faster (84 → 25 ms, ``docs/benchmarks.md``).

The graph is compiled once, for the shape of the first batch, without dynamic shapes
(which took 11 minutes to compile instead of 2–4). Later batches with that shape (every
batch of one molecule's trajectory, as the trainer keeps batches full) run compiled;
any other shape runs the eager step, with the same numbers. The first compiled step is
checked against the eager one (loss and gradients); if they disagree, a warning says
so and the run goes on eager: a compiler fault costs speed, never a wrong fit.
Energy and force labels only: data with stress, dipoles or charges are a config error
(:func:`check_labels`).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch

from .. import keys
from ..derivatives.fixed_shape import loss_gradients
from ..potential import Potential
from .config import ConfigError
from .evaluation import predict, residual_energy
from .losses import TERMS, LossWeights, Prediction, Reference, combine, loss_sums

#: the labels a compiled step can fit
LABELS = ("energy", "forces")


def check_labels(labels, source: str) -> None:
    """A clear error when the data carry labels a compiled step does not fit."""
    other = [k for k in labels if k not in LABELS]
    if other:
        raise ConfigError(f"{source}: training.compile fits energy and force labels only; "
                          f"the data also have {', '.join(other)}: set training.compile: "
                          f"false, or leave those labels out")


def _shape(graph: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(graph.items())
                 if isinstance(v, torch.Tensor))


class CompiledStep:
    """Loss and parameter gradients of one batch, compiled for one batch shape.

    ``step(graph, ref, weights, denominators)`` returns (loss, prediction) after setting
    every parameter's ``.grad``, or None when the batch's shape is not the compiled one
    (the caller then runs the eager step).
    """

    def __init__(self, potential: torch.nn.Module):
        self.potential = potential
        self.names = [n for n, p in potential.named_parameters() if p.requires_grad]
        self.shape: tuple | None = None
        #: batches run compiled / eager because of another shape
        self.compiled_calls = 0
        self.eager_calls = 0
        #: the first compiled step was compared with the eager one / disagreed with it
        self.checked = False
        self.failed = False
        self._compiled = torch.compile(self._step, dynamic=False)

    def _step(self, params: dict[str, torch.Tensor], graph: dict[str, torch.Tensor],
              ref: Reference, present: LossWeights, weights: torch.Tensor,
              denominators: dict[str, torch.Tensor] | None):
        potential = self.potential

        def loss_of(out: dict, forces: torch.Tensor):
            energy = residual_energy(out[keys.CONTRIBUTIONS], out, potential.reference_names)
            pred = Prediction(energy=energy, forces=forces)
            total = combine(loss_sums(pred, ref, present),
                            LossWeights(*weights.unbind()), denominators).total
            return total, (energy.detach(), forces.detach())

        return loss_gradients(potential, params, graph, loss_of)

    def __call__(self, graph: dict[str, torch.Tensor], ref: Reference, weights: LossWeights,
                 denominators: dict[str, torch.Tensor] | None
                 ) -> tuple[torch.Tensor, Prediction] | None:
        shape = _shape(graph)
        if self.shape is None:
            self.shape = shape
        if shape != self.shape or self.failed:
            self.eager_calls += 1
            return None
        params = dict(self.potential.named_parameters())
        # which terms exist is part of the graph; their weights are inputs (stage two
        # changes them without a recompile)
        present = LossWeights(*(float(getattr(weights, k) > 0) for k in TERMS))
        positions = graph[keys.POSITIONS]
        values = torch.tensor([getattr(weights, k) for k in TERMS], dtype=positions.dtype,
                              device=positions.device)
        fitted = self.potential.as_fitted() if isinstance(self.potential, Potential) \
            else nullcontext()
        # the parameters go in as they are (requiring grad, grad mode on): given detached
        # copies, or under no_grad, Inductor (torch 2.13, CPU) returned zero forces
        # from the inner torch.func.grad; aot_eager did not
        with fitted, torch.enable_grad():
            grads, loss, (energy, forces) = self._compiled(
                {n: params[n] for n in self.names}, graph, ref, present, values,
                denominators)
        grads = {n: g.detach() for n, g in grads.items()}
        if not self.checked:
            self.checked = True
            if not self._agrees(graph, ref, weights, denominators, loss.detach(), grads):
                self.failed = True
                self.eager_calls += 1
                return None  # the caller's eager step sets the gradients
        self.compiled_calls += 1
        for n in self.names:
            params[n].grad = grads[n]
        return loss.detach(), Prediction(energy=energy, forces=forces)

    def summary(self) -> str:
        """One line for the log: how many steps ran compiled, and whether the check passed."""
        if self.failed:
            return (f"training.compile: the compiled step disagreed with the eager one; "
                    f"{self.eager_calls} steps ran eager")
        return (f"training.compile: {self.compiled_calls} steps compiled (checked against "
                f"the eager step), {self.eager_calls} eager (another batch shape)")

    def _agrees(self, graph, ref, weights, denominators, loss, grads) -> bool:
        """The first compiled step against the eager one (loss and every gradient, to
        1e-4 of the largest); a compiler fault then costs speed, never a wrong fit."""
        pred = predict(self.potential, graph, ("energy", "forces"), create_graph=True)
        eager = combine(loss_sums(pred, ref, weights), weights, denominators).total
        params = dict(self.potential.named_parameters())
        for n in self.names:
            params[n].grad = None
        eager.backward()
        eager = eager.detach()
        reference_grads = [params[n].grad if params[n].grad is not None
                           else torch.zeros_like(params[n]) for n in self.names]
        for n in self.names:
            params[n].grad = None
        scale = max(float(g.abs().max()) for g in reference_grads) or 1.0
        worst = max(float((grads[n] - g).abs().max())
                    for n, g in zip(self.names, reference_grads))
        ok = abs(float(loss) - float(eager)) <= 1e-4 * max(abs(float(eager)), 1e-12) \
            and worst <= 1e-4 * scale
        if not ok:
            warnings.warn(
                f"training.compile: the compiled step disagrees with the eager one "
                f"(loss {float(loss):.6g} vs {float(eager):.6g}, largest gradient "
                f"difference {worst:.3g} of {scale:.3g}); training goes on with the eager "
                f"step", RuntimeWarning, stacklevel=3)
        return ok
