"""Inference routines, the Result type and the diagnostics layer (``bayeskit.inference``)."""

from bayeskit.models import _config  # noqa: F401  (float64 in JAX unless BAYESKIT_X64=0)

from ._checks import Check, register_check
from ._diagnostics import Report, diagnose
from ._errors import ConvergenceError
from ._laplace import laplace
from ._map import map_estimate
from ._nuts import nuts
from ._predictive import predictive, prior_predictive
from ._result import Result
from ._svi import svi

__all__ = [
    "Check",
    "ConvergenceError",
    "Report",
    "Result",
    "diagnose",
    "laplace",
    "map_estimate",
    "nuts",
    "predictive",
    "prior_predictive",
    "register_check",
    "svi",
]
