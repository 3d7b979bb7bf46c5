"""Diagnostics for stochastic-gradient results (``robbins_monro``, ``sgld``), which
any Pyro program can produce, so they are registered for every model class.

They read what the run records in ``info``: the step-size schedule and the
gradient-noise ratio. R-hat and ESS of SGLD chains are the built-in sampling
checks, restricted to ``info["diagnostic_sites"]``.
"""

import math

from ._checks import ANY_MODEL, Check, register_check
from ._result import result_attrs, routine_info

GRADIENT_NOISE_MAX = 1.0


def _info(idata) -> dict | None:
    method = str(result_attrs(idata).get("method", ""))
    return routine_info(idata, method) if method in ("robbins_monro", "sgld") else None


def step_size_check(idata, context) -> list[Check]:
    """Whether the steps satisfy the Robbins–Monro conditions sum = inf, sum of squares < inf."""
    info = _info(idata)
    if info is None:
        return []
    schedule = info["step_size_schedule"]
    kind = schedule["schedule"]
    if kind == "robbins_monro":
        gamma = schedule["gamma"]
        message = (
            f"a (b + t)^-gamma with gamma = {gamma:g} in (0.5, 1]: the steps sum to infinity and their squares "
            "do not, so the iterates settle instead of wandering at a noise floor"
        )
        return [Check("robbins_monro_conditions", "ok", gamma, 0.5, message)]
    consequence = {
        "robbins_monro": "",
        "constant": "a constant step never decays: SGD ends in a noise ball whose size grows with the step, "
        "and SGLD samples a distribution biased by O(step)",
        "cyclical": "a cyclical schedule restarts every cycle: only draws at the end of each cycle, "
        "where the step is small, approximate the posterior",
    }[kind]
    return [Check("robbins_monro_conditions", "warn", math.nan, 0.5, f"{kind} step size: {consequence}")]


def gradient_noise_check(idata, context) -> list[Check]:
    """Minibatch gradient noise against SGLD's injected noise (Welling & Teh 2011, section 4)."""
    info = _info(idata)
    if info is None or "gradient_noise_ratio" not in info:
        return []
    ratio = max(info["gradient_noise_ratio"])
    ok = ratio <= GRADIENT_NOISE_MAX
    message = "minibatch noise in the drift / injected noise at the last step (90th percentile, worst chain): " + (
        "the injected noise dominates, as SGLD assumes"
        if ok
        else "the minibatch noise dominates, so the chains are wider than the posterior; "
        "lower the final step size or raise batch_size"
    )
    return [Check("gradient_noise", "ok" if ok else "warn", ratio, GRADIENT_NOISE_MAX, message)]


def stationarity_check(idata, context) -> list[Check]:
    """Whether each SGLD chain's energy (-log posterior per point) was stationary after
    warm-up: the mean of its last tenth against the tenth before, in standard errors."""
    info = _info(idata)
    if info is None or "stationarity_z" not in info:
        return []
    z = max(info["stationarity_z"])
    ok = z <= 3.0
    message = "change in -log posterior over the last tenth of the draws (worst chain, standard errors): " + (
        "the chains were stationary after warm-up" if ok else "a chain was still drifting; raise num_warmup"
    )
    return [Check("loss_trace", "ok" if ok else "warn", z, 3.0, message)]


register_check(ANY_MODEL, step_size_check)
register_check(ANY_MODEL, stationarity_check)
register_check(ANY_MODEL, gradient_noise_check)
