"""Diagnostics registered for Gaussian processes (``fit_gp``) and Bayesian optimisation.

They read what the routines record in ``info`` and ``trace``, so a saved and
reloaded result is judged the same way.
"""

import numpy as np

from bayeskit.models import GaussianProcess

from ._checks import Check, register_check
from ._result import routine_info

# under the model the standardised LOO residuals are N(0, 1): about 0.3% beyond 3
LOO_TAIL = 3.0
LOO_TAIL_FRACTION_MAX = 0.01
# their mean square far from 1 means the noise or signal variance is misjudged
LOO_MEAN_SQUARE_RANGE = (0.5, 2.0)
# share of proposals where refining the acquisition did not beat random search
ACQUISITION_FAILURE_MAX = 0.2


def jitter_check(idata, context) -> list[Check]:
    info = routine_info(idata, "fit_gp")
    if info is None:
        return []
    jitter = float(info["jitter"])
    if jitter == 0.0:
        return [Check("jitter", "ok", 0.0, 0.0, "the kernel matrix factorised without jitter")]
    return [
        Check(
            "jitter",
            "warn",
            jitter,
            0.0,
            f"jitter {jitter:.3g} was added to the diagonal to factorise the kernel matrix "
            f"({info['near_duplicates']} near-duplicate inputs); predictions near them are regularised",
        )
    ]


def loo_check(idata, context) -> list[Check]:
    info = routine_info(idata, "fit_gp")
    if info is None or "loo_residuals" not in info:  # sparse fits have none
        return []
    residuals = np.asarray(info["loo_residuals"], float)
    tail = float(np.mean(np.abs(residuals) > LOO_TAIL))
    mean_square = float(np.mean(residuals**2))
    low, high = LOO_MEAN_SQUARE_RANGE
    status = "ok" if tail <= LOO_TAIL_FRACTION_MAX and low <= mean_square <= high else "warn"
    message = (
        f"standardised leave-one-out residuals: mean square {mean_square:.3g} (1 under the model), "
        f"{100 * tail:.2g}% beyond {LOO_TAIL:g} (0.27% under the model)"
    )
    if status == "warn":
        message += "; the kernel or the noise level does not describe these data (outliers, heavy tails, trends)"
    return [Check("loo_residuals", status, mean_square, high, message)]


def regret_check(idata, context) -> list[Check]:
    info = routine_info(idata, "bayes_opt")
    if info is None:
        return []
    best = np.asarray(idata.fit_trace["best_value"].values, float)
    finite = best[np.isfinite(best)]
    signed = finite if info["minimize"] else -finite
    worsened = bool(np.any(np.diff(signed) > 0))
    last_gain = int(np.flatnonzero(np.diff(np.concatenate([[np.inf], signed])) < 0)[-1]) if finite.size else -1
    message = (
        f"best value {finite[-1]:.6g} after {best.size} evaluations, last improved at evaluation {last_gain + 1}"
        if finite.size
        else "no successful evaluation"
    )
    failed = len(info["failed"])
    if failed:
        message += f"; {failed} evaluations failed"
    status = "fail" if worsened or not finite.size else "ok"
    return [Check("best_value", status, float(finite[-1]) if finite.size else np.nan, np.nan, message)]


def acquisition_check(idata, context) -> list[Check]:
    info = routine_info(idata, "bayes_opt")
    if info is None or not info["rounds"]:
        return []
    refined = np.concatenate([np.asarray(r["acquisition_refined"], bool) for r in info["rounds"]])
    failures = float(np.mean(~refined))
    status = "ok" if failures <= ACQUISITION_FAILURE_MAX else "warn"
    message = (
        f"gradient refinement of the acquisition beat the best random candidate in "
        f"{int(np.sum(refined))} of {refined.size} proposals"
    )
    if status == "warn":
        message += "; the acquisition surface is flat or rough (check the surrogate's lengthscales)"
    return [Check("acquisition_optimisation", status, failures, ACQUISITION_FAILURE_MAX, message)]


for _check in (jitter_check, loo_check, regret_check, acquisition_check):
    register_check(GaussianProcess, _check)
