"""Model classes, kernels, bases and embedded datasets (``bayeskit.models``)."""

from . import (
    _config,  # noqa: F401  (turns on float64 in JAX unless BAYESKIT_X64=0)
    kernels,
)
from ._gp import GaussianProcess
from ._mixture import GaussianMixture

__all__ = ["GaussianMixture", "GaussianProcess", "kernels"]
