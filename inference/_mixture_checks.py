"""Diagnostics registered for Gaussian mixtures fitted by EM (batch or online).

They read what :func:`em` and :func:`online_em` record (the bound's trace, the
repairs, the restarts' final bounds, BIC/AIC) from the InferenceData, so a saved
and reloaded result is judged the same way. A mixture fitted as a NumPyro program
(NUTS, SVI, Laplace) is judged by the generic checks only.
"""

import json
import math

import numpy as np

from bayeskit.models import GaussianMixture

from ._checks import Check, register_check
from ._result import result_attrs

# the bound may dip by round-off and by reg_covar (which makes the M-step a
# maximiser of a slightly different objective); a genuine EM error is far larger
MONOTONE_SLACK = 1e-7
# restarts within this many nats per sample of the best count as finding it
RESTART_AGREEMENT = 1e-4


def _em_info(idata):
    attrs = result_attrs(idata)
    if attrs.get("method") not in ("em", "online_em"):
        return None, None
    return attrs["method"], json.loads(attrs["info"])


def information_criteria(idata, context) -> list[Check]:
    method, info = _em_info(idata)
    if method != "em":
        return []
    size = f"{info['num_parameters']} parameters, total weight {info['total_weight']:g}"
    selection = info.get("selection")
    if selection:
        values = ", ".join(f"K={k}: {v:.6g}" for k, v in zip(selection["candidates"], selection["values"], strict=True))
        size += f"; chosen by {selection['criterion'].upper()} from {values}"
    return [
        Check("bic", "ok", info["bic"], math.nan, f"BIC {info['bic']:.6g} ({size}); compare across K, lower is better"),
        Check("aic", "ok", info["aic"], math.nan, f"AIC {info['aic']:.6g} ({size}); compare across K, lower is better"),
    ]


def restart_agreement(idata, context) -> list[Check]:
    method, info = _em_info(idata)
    if method != "em" or info["num_inits"] < 2:
        return []
    finals = np.asarray(info["log_likelihood_per_init"], float)
    gaps = np.max(finals) - finals
    agree = int(np.sum(gaps <= RESTART_AGREEMENT))
    spread = float(np.max(gaps[np.isfinite(gaps)]))
    message = (
        f"{agree} of {len(finals)} restarts reached the best bound {np.max(finals):.6g} "
        f"(within {RESTART_AGREEMENT:g} nats per sample); the worst was {spread:.3g} below"
    )
    if agree < 2:
        message += ": the best optimum was found once, so more num_inits may find a better one"
    return [Check("restarts", "ok" if agree >= 2 else "warn", agree / len(finals), 2 / len(finals), message)]


def collapsed_components(idata, context) -> list[Check]:
    method, info = _em_info(idata)
    if method is None or "params" not in idata.groups():
        return []
    weights = np.asarray(idata.params["weights"].values)
    dim = np.asarray(idata.params["means"].values).shape[1]
    counts = weights * info["total_weight"]
    # a full covariance needs D + 1 points to be determined by the data and not by reg_covar
    minimum = dim + 1
    tiny = np.nonzero(counts < minimum)[0].tolist()
    repairs = info["repairs"]
    parts = []
    if repairs:
        where = sorted({(r["init"], r["iteration"]) for r in repairs})
        listed = ", ".join(map(str, where[:5])) + (", ..." if len(where) > 5 else "")
        noun = "component was" if len(repairs) == 1 else "components were"
        parts.append(f"{len(repairs)} collapsed {noun} re-initialised at (init, iteration) {listed}")
    if tiny:
        parts.append(f"components {tiny} explain fewer than D + 1 = {minimum} points")
    message = "; ".join(parts) or f"every component explains at least D + 1 = {minimum} points; no repairs"
    value = float(np.min(counts)) if len(counts) else math.nan
    return [Check("collapsed_components", "warn" if parts else "ok", value, float(minimum), message)]


def monotone_bound(idata, context) -> list[Check]:
    method, info = _em_info(idata)
    if method != "em" or "fit_trace" not in idata.groups():
        return []  # online EM's per-batch bound is noisy by design
    trace = np.atleast_2d(np.asarray(idata.fit_trace["log_likelihood"].values, float))
    repaired = {(r["init"], r["iteration"]) for r in info["repairs"]}
    worst, where = 0.0, None
    for init, row in enumerate(trace):
        row = row[np.isfinite(row)]
        slack = MONOTONE_SLACK * (1 + np.abs(row[1:]))
        for t in np.nonzero(np.diff(row) < -slack)[0]:
            drop = row[t] - row[t + 1]
            if (init, int(t) + 1) not in repaired and drop > worst:
                worst, where = float(drop), (init, int(t) + 1)
    if where is None:
        message = "the bound never decreased between repairs"
        return [Check("monotone_bound", "ok", 0.0, MONOTONE_SLACK, message)]
    message = f"the bound fell by {worst:.3g} at iteration {where[1]} of restart {where[0]} with no repair: EM is wrong"
    return [Check("monotone_bound", "fail", worst, MONOTONE_SLACK, message)]


for _check in (information_criteria, restart_agreement, collapsed_components, monotone_bound):
    register_check(GaussianMixture, _check)
