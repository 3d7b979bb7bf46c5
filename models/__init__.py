"""Model classes, kernels, bases and embedded datasets (``bayeskit.models``)."""

import importlib

from . import (
    _config,  # noqa: F401  (turns on float64 in JAX unless BAYESKIT_X64=0)
    bases,
    kernels,
)
from ._glm import GLM
from ._gp import GaussianProcess
from ._mixture import GaussianMixture
from ._spikes import LNP, PopulationGLM, spike_triggered_average, spike_triggered_covariance

# torch-native models import torch and Pyro on first use, not with the package
_TORCH_MODELS = {"BayesianMLP": "._bnn", "DiffusionModel": "._diffusion"}


def __getattr__(name):
    if name in _TORCH_MODELS:
        return getattr(importlib.import_module(_TORCH_MODELS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BayesianMLP",
    "DiffusionModel",
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
