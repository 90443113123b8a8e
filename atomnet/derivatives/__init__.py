"""Forces, stress and Hessians: the only module that calls ``torch.autograd``."""

from .core import Results, evaluate, hessian, output_jacobian

__all__ = ["Results", "evaluate", "hessian", "output_jacobian"]
