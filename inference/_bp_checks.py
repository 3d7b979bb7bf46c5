"""Diagnostics registered for belief propagation on factor graphs.

They read the residual trace and what the routine records in ``info`` (the error
against exact marginals, computed beside BP on graphs small enough), so a saved
and reloaded result is judged the same way.
"""

import numpy as np

from bayeskit.graphs import FactorGraph

from ._checks import Check, register_check
from ._result import routine_info

# loopy BP's marginals are approximate; beyond this error against exact inference
# (in probability) they are not to be trusted as such
EXACT_ERROR_MAX = 0.05
# in a residual trace that goes up about as often as down, BP is cycling, not converging
OSCILLATION_TURN_SHARE = 0.3
# a residual whose later half of the window is below this share of the earlier half is
# still decaying, and more sweeps may be all it needs
FALLING_RATIO = 0.5


def residual_check(idata, context) -> list[Check]:
    info = routine_info(idata, "belief_propagation")
    if info is None:
        return []
    residual = np.asarray(idata.fit_trace["residual"].values, float)
    residual = residual[np.isfinite(residual)]
    last, tol = float(residual[-1]), float(info["tol"])
    sweeps = f"{info['num_iterations']} sweeps ({info['schedule']}, damping {info['damping']:g})"
    if last < tol:
        return [Check("bp_convergence", "ok", last, tol, f"messages converged in {sweeps}")]
    window = np.log(np.maximum(residual[-max(10, residual.size // 4) :], 1e-300))
    half = window.size // 2
    trend = float(np.exp(np.median(window[half:]) - np.median(window[:half])))  # later / earlier
    turns = np.mean(np.diff(np.sign(np.diff(window))) != 0) if window.size > 2 else 0.0
    if trend < FALLING_RATIO:
        advice = (
            f"the residual is still falling (by {1 / trend:.3g}x over the last {window.size} sweeps): "
            "more max_iter may be enough"
        )
    else:
        behaviour = "oscillates: BP is cycling" if turns > OSCILLATION_TURN_SHARE else "is not falling"
        advice = f"the residual {behaviour}; {_remedy(info)}"
    message = f"not converged after {sweeps}: largest message change {last:.3g} > tol; {advice}"
    return [Check("bp_convergence", "fail", last, tol, message)]


def _remedy(info) -> str:
    damping = float(info["damping"])
    if damping == 0:
        return "try damping=0.5" + (" or schedule='residual'" if info["schedule"] == "flooding" else "")
    if damping < 0.9:
        return f"try more damping than {damping:g}, or exact_marginals where the graph allows it"
    return "this graph may have no stable BP fixed point; use exact_marginals where the graph allows it"


def exact_check(idata, context) -> list[Check]:
    info = routine_info(idata, "belief_propagation")
    if info is None or "exact_max_error" not in info:
        return []
    error, where = float(info["exact_max_error"]), info["exact_worst_variable"]
    if info["is_tree"]:
        message = f"the graph is a tree, where BP is exact: largest error {error:.3g} (at {where})"
    else:
        message = f"loopy BP against the junction tree: largest marginal error {error:.3g} at {where}"
    status = "ok" if error <= EXACT_ERROR_MAX else "warn"
    if status == "warn":
        message += " (loopy BP's approximation is poor here; exact_marginals is affordable on this graph)"
    return [Check("exact_marginals", status, error, EXACT_ERROR_MAX, message)]


for _check in (residual_check, exact_check):
    register_check(FactorGraph, _check)
