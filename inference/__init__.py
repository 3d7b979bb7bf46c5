"""Inference routines, the Result type and the diagnostics layer (``bayeskit.inference``)."""

import importlib

from bayeskit.models import _config  # noqa: F401  (float64 in JAX unless BAYESKIT_X64=0)

from . import (  # noqa: F401  (register their diagnostics)
    _bp_checks,
    _diffusion_checks,
    _glm_checks,
    _gp_checks,
    _mixture_checks,
    _sg_checks,
)
from ._bayes_opt import BayesOpt, bayes_opt
from ._belief_propagation import belief_propagation
from ._checks import Check, register_check
from ._diagnostics import Report, diagnose
from ._em import em, online_em, select_n_components
from ._errors import ConvergenceError
from ._glm_fit import fit_glm
from ._gp_fit import fit_gp
from ._laplace import laplace
from ._map import map_estimate
from ._nuts import nuts
from ._predictive import predictive, prior_predictive
from ._result import Result
from ._schedules import Cyclical, RobbinsMonro
from ._svi import svi
from ._time_rescaling import time_rescaling_test

# the torch routines import torch and Pyro on first use, not with the package
_TORCH_ROUTINES = {
    "robbins_monro": "._sgmcmc",
    "sgld": "._sgmcmc",
    "train_score_model": "._diffusion",
    "sample": "._diffusion",
    "log_likelihood": "._diffusion",
}


def __getattr__(name):
    if name in _TORCH_ROUTINES:
        return getattr(importlib.import_module(_TORCH_ROUTINES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BayesOpt",
    "Check",
    "ConvergenceError",
    "Cyclical",
    "Report",
    "Result",
    "RobbinsMonro",
    "bayes_opt",
    "belief_propagation",
    "diagnose",
    "em",
    "fit_glm",
    "fit_gp",
    "laplace",
    "log_likelihood",
    "map_estimate",
    "nuts",
    "online_em",
    "predictive",
    "prior_predictive",
    "register_check",
    "robbins_monro",
    "sample",
    "select_n_components",
    "sgld",
    "svi",
    "time_rescaling_test",
    "train_score_model",
]
