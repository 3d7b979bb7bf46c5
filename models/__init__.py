"""Model classes, kernels, bases and embedded datasets (``bayeskit.models``)."""

from . import (
    _config,  # noqa: F401  (turns on float64 in JAX unless BAYESKIT_X64=0)
    bases,
    kernels,
)
from ._glm import GLM
from ._gp import GaussianProcess
from ._mixture import GaussianMixture
from ._spikes import LNP, PopulationGLM, spike_triggered_average, spike_triggered_covariance

__all__ = [
    "GLM",
    "LNP",
    "GaussianMixture",
    "GaussianProcess",
    "PopulationGLM",
    "bases",
    "kernels",
    "spike_triggered_average",
    "spike_triggered_covariance",
]
