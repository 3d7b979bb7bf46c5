"""Diagnostics registered for GLMs and the spike-train models fitted by :func:`fit_glm`.

They read what the fit records in ``info`` (deviance, pseudo-R², the time-rescaling
test on the training data), so a saved and reloaded result is judged the same way.
"""

import math

from bayeskit.models import GLM, LNP, PopulationGLM

from ._checks import Check, register_check
from ._result import routine_info

# the KS test of the rescaled spike times: below the first level a warning, below
# the second the model is rejected
KS_WARN_LEVEL = 0.05
KS_FAIL_LEVEL = 0.001


def _as_list(value):
    return value if isinstance(value, list) else [value]


def deviance_check(idata, context) -> list[Check]:
    info = routine_info(idata, "fit_glm")
    if info is None:
        return []
    r2 = _as_list(info["pseudo_r2"])
    deviance, null = _as_list(info["deviance"]), _as_list(info["null_deviance"])
    if len(r2) == 1:
        message = f"deviance {deviance[0]:.6g} against {null[0]:.6g} for the intercept alone"
    else:
        message = f"per problem from {min(r2):.3g} to {max(r2):.3g}; summed deviance {sum(deviance):.6g}"
    message = f"pseudo-R² (1 - deviance / null deviance) {min(r2):.3g}: " + message
    return [Check("pseudo_r2", "ok", float(min(r2)), math.nan, message)]


def time_rescaling_check(idata, context) -> list[Check]:
    info = routine_info(idata, "fit_glm")
    if info is None or "time_rescaling" not in info:
        return []
    test = info["time_rescaling"]
    p = float(test["p_value"])
    status = "ok" if p >= KS_WARN_LEVEL else ("warn" if p >= KS_FAIL_LEVEL else "fail")
    worst = min(test["per_neuron"], key=lambda row: row["p_value"] if math.isfinite(row["p_value"]) else 1.0)
    message = (
        f"time-rescaling KS test on the training spikes (Haslinger et al. 2010 correction): "
        f"D = {test['ks_statistic']:.3g}, p = {p:.3g} pooled over {len(test['per_neuron'])} neuron(s)"
    )
    if len(test["per_neuron"]) > 1:
        message += f"; lowest p = {worst['p_value']:.3g} (neuron {worst['neuron']})"
    if status != "ok":
        message += ": the intensity misses structure in the spike times (history, coupling, stimulus)"
    return [Check("time_rescaling", status, p, KS_WARN_LEVEL, message)]


def skipped_importance_check(idata, context) -> list[Check]:
    """Say so when the fit did not evaluate its Laplace draws, rather than leave the row out."""
    info = routine_info(idata, "fit_glm")
    note = None if info is None else info.get("importance_ratios", "computed")
    if note is None or note == "computed":
        return []
    return [Check("pareto_khat", "ok", math.nan, math.nan, f"not applicable: importance ratios {note}")]


for _model in (GLM, LNP, PopulationGLM):
    for _check in (deviance_check, time_rescaling_check, skipped_importance_check):
        register_check(_model, _check)
