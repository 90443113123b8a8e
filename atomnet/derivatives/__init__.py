"""Forces, stress and Hessians: the only module that calls ``torch.autograd``."""

from .core import Results, evaluate, hessian

__all__ = ["Results", "evaluate", "hessian"]
