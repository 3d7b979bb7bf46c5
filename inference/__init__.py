"""Inference routines, the Result type and the diagnostics layer (``bayeskit.inference``)."""

from bayeskit.models import _config  # noqa: F401  (float64 in JAX unless BAYESKIT_X64=0)

from . import _bp_checks, _glm_checks, _gp_checks, _mixture_checks  # noqa: F401  (register their diagnostics)
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
from ._schedules import RobbinsMonro
from ._svi import svi
from ._time_rescaling import time_rescaling_test

__all__ = [
    "BayesOpt",
    "Check",
    "ConvergenceError",
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
    "map_estimate",
    "nuts",
    "online_em",
    "predictive",
    "prior_predictive",
    "register_check",
    "select_n_components",
    "svi",
    "time_rescaling_test",
]
