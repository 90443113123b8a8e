"""Forces, stress and Hessians: the only module that calls ``torch.autograd``."""

from .core import HESSIAN_CHUNK, Results, evaluate, hessian, hessians, output_jacobian

__all__ = ["HESSIAN_CHUNK", "Results", "evaluate", "hessian", "hessians", "output_jacobian"]
