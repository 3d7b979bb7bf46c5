"""The built-in checks of the diagnostics layer, each chosen by the InferenceData
groups present, and the registry through which models add their own.

A check is a function ``(idata, context) -> list[Check]`` that returns ``[]`` when
the groups it reads are absent. ``context`` carries what is not in the
InferenceData (the ``reference`` draws passed to ``diagnose``).
"""

import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import scipy.spatial
import scipy.special

from ._result import Result, _arviz, class_name, result_attrs

R_HAT_MAX = 1.01  # Vehtari et al. (2021)
ESS_MIN = 400  # in total over chains, Vehtari et al. (2021)
MCSE_RATIO_MAX = 0.05  # MCSE of the mean relative to the posterior sd; 0.05 is ESS 400
LOO_K_MAX = 0.7
REFERENCE_ALPHA = 0.01  # level of the energy-distance permutation test


@dataclass(frozen=True)
class Check:
    """One diagnostic: ``status`` is ``"ok"``, ``"warn"`` or ``"fail"``."""

    name: str
    status: str
    value: float
    threshold: float
    message: str


CheckFn = Callable[..., Iterable[Check]]
_MODEL_CHECKS: dict[str, list[CheckFn]] = {}
ANY_MODEL = "*"  # checks of routines that take any program, run on every InferenceData


def register_check(model_class: str | type, check: CheckFn) -> CheckFn:
    """Run ``check(idata, context)`` on every InferenceData whose ``attrs["model_class"]``
    names ``model_class`` (a class or its ``module.QualName``; ``"*"`` for every class)."""
    key = model_class if isinstance(model_class, str) else class_name(model_class)
    _MODEL_CHECKS.setdefault(key, []).append(check)
    return check


def _posterior_values(idata) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.values, float) for k, v in idata.posterior.data_vars.items()}


def _worst(dataset, pick) -> tuple[float, str]:
    """The extreme value over every variable and component, and where it is."""
    best, where = math.nan, ""
    for name, values in dataset.data_vars.items():
        array = np.asarray(values.values, float)
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            continue
        candidate = pick(finite)
        if math.isnan(best) or pick([best, candidate]) == candidate:
            best, where = float(candidate), name
    return best, where


def diagnostic_sites(idata) -> list[str]:
    """The posterior sites chains are compared on: ``info["diagnostic_sites"]`` when
    the routine named them (functionals of a neural network, whose weights are not
    identified), else every site."""
    sites = json.loads(result_attrs(idata).get("info", "{}")).get("diagnostic_sites")
    return list(idata.posterior.data_vars) if sites is None else [s for s in sites if s in idata.posterior]


def _varying(idata):
    """The diagnostic sites that are finite and not constant (ESS and R-hat are undefined otherwise)."""
    posterior = idata.posterior

    def varies(name):
        values = np.asarray(posterior[name], float)
        return bool(np.all(np.isfinite(values)) and values.std() > 0)

    return posterior[[name for name in diagnostic_sites(idata) if varies(name)]]


def sampling_checks(idata, context) -> list[Check]:
    if "posterior" not in idata.groups():
        return []
    az = _arviz()
    checks = []
    counts = {name: np.sum(~np.isfinite(np.asarray(idata.posterior[name], float))) for name in diagnostic_sites(idata)}
    nonfinite = {name: int(count) for name, count in counts.items() if count}
    if nonfinite:  # the checks below leave these sites out
        checks.append(Check("finite_draws", "fail", float(sum(nonfinite.values())), 0.0,
                            f"NaN or inf draws per site: {nonfinite}"))  # fmt: skip
    posterior = _varying(idata)
    if not posterior.data_vars:
        return checks
    chains = posterior.sizes["chain"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if chains >= 2:
            value, where = _worst(az.rhat(posterior, method="rank"), max)
            status = "ok" if value < R_HAT_MAX else "fail"
            checks.append(Check("r_hat", status, value, R_HAT_MAX, f"max rank-normalised split R-hat ({where})"))
        else:
            checks.append(
                Check(
                    "r_hat",
                    "ok",
                    math.nan,
                    R_HAT_MAX,
                    "not applicable: one chain (independent draws have no between-chain variance)",
                )
            )
        for method in ("bulk", "tail"):
            value, where = _worst(az.ess(posterior, method=method), min)
            status = "ok" if value >= ESS_MIN else "fail"
            checks.append(Check(f"ess_{method}", status, value, ESS_MIN, f"min {method} ESS over chains ({where})"))
        mcse = az.mcse(posterior, method="mean")
        sd = posterior.std(dim=("chain", "draw"))
        value, where = _worst(mcse / sd, max)
        status = "ok" if value <= MCSE_RATIO_MAX else "warn"
        checks.append(Check("mcse", status, value, MCSE_RATIO_MAX, f"max MCSE of the mean / posterior sd ({where})"))
    return checks


def divergence_check(idata, context) -> list[Check]:
    if "sample_stats" not in idata.groups() or "diverging" not in idata.sample_stats:
        return []
    count = int(np.asarray(idata.sample_stats["diverging"]).sum())
    total = int(np.asarray(idata.sample_stats["diverging"]).size)
    message = f"{count} of {total} transitions diverged"
    if count:
        message += "; the sampler missed part of the posterior (reparameterise or raise target_accept)"
    return [Check("divergences", "ok" if count == 0 else "fail", float(count), 0.0, message)]


def khat_threshold(num_draws: int) -> float:
    """min(1 - 1/log10(S), 0.7), Vehtari et al. (2024)."""
    return min(1.0 - 1.0 / math.log10(num_draws), 0.7) if num_draws > 10 else 0.0


def importance_ratios(idata) -> np.ndarray | None:
    stats = idata.sample_stats if "sample_stats" in idata.groups() else None
    if stats is None or "log_p" not in stats or "log_q" not in stats:
        return None
    return (np.asarray(stats["log_p"]) - np.asarray(stats["log_q"])).ravel()


def pareto_khat_check(idata, context) -> list[Check]:
    log_ratio = importance_ratios(idata)
    if log_ratio is None:
        return []
    threshold = khat_threshold(log_ratio.size)
    if np.ptp(log_ratio) <= 1e-6:
        # q equals p up to its normalising constant: every weight is the same, and the
        # generalised Pareto fit is undefined; no tail at all is the best case
        message = "Pareto k-hat of log p - log q: the ratios are constant, q matches p exactly"
        return [Check("pareto_khat", "ok", -math.inf, threshold, message)]
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, khat = az.psislw(log_ratio - np.max(log_ratio))
    khat = float(khat)
    ok = khat <= threshold
    message = "Pareto k-hat of log p - log q: " + (
        "the approximation is close enough for importance sampling to correct it"
        if ok
        else "the approximation is unreliable here (tails or shape are off)"
    )
    return [Check("pareto_khat", "ok" if ok else "fail", khat, threshold, message)]


def plateaued(values: np.ndarray, fraction: float = 0.1) -> tuple[bool, float]:
    """Has a noisy objective stopped moving? Compares the mean of its last
    ``fraction`` with the one before, in standard errors (returned as the z-score)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    window = max(int(len(values) * fraction), 2)
    if len(values) < 2 * window:
        return False, math.inf
    last, before = values[-window:], values[-2 * window : -window]
    stderr = math.sqrt((np.var(last) + np.var(before)) / window)
    change = abs(last.mean() - before.mean())
    z = change / stderr if stderr > 0 else (0.0 if change <= 1e-9 * (1 + abs(last.mean())) else math.inf)
    return z <= 3.0, float(z)


def objective_check(idata, context) -> list[Check]:
    if "fit_trace" not in idata.groups():
        return []
    trace = idata.fit_trace
    converged = bool(int(trace.attrs.get("converged", 1)))
    checks = []
    for name in ("elbo", "loss"):
        if name not in trace:
            continue
        values = np.asarray(trace[name].values, float)
        rows = values.reshape(-1, values.shape[-1])  # NaN pads chains that stopped early
        finals = [row[np.isfinite(row)][-1] for row in rows if np.isfinite(row).any()]
        if name == "elbo":
            averaged = np.nanmean(rows, axis=0)
            flat, z = plateaued(averaged)
            # one step's ELBO is a noisy estimate: report the mean of the last tenth, as info["final_elbo"]
            averaged = averaged[np.isfinite(averaged)]
            final = np.mean(averaged[-max(len(averaged) // 10, 1) :])
            message = f"elbo: change over the last tenth is {z:.2f} standard errors (plateau below 3)"
            message += f"; mean elbo over the last tenth {final:.6g}"
            checks.append(Check("objective_trace", "ok" if flat else "warn", z, 3.0, message))
        else:
            # an optimiser that did not converge has not found its answer; of several
            # restarts, the answer is the best one
            verdict = "convergence" if converged else "no convergence"
            best = f"; final loss {min(finals):.6g}" if finals else ""
            if len(finals) > 1:
                best += f" (the best of {len(finals)} restarts)"
            message = f"loss: the routine reports {verdict}{best}"
            checks.append(Check("objective_trace", "ok" if converged else "fail", math.nan, math.nan, message))
    return checks


def loo_check(idata, context) -> list[Check]:
    """PSIS-LOO per observed site (Vehtari et al. 2017).

    Draws from an approximation q with a known density (``sample_stats`` has
    ``log_p`` and ``log_q``) are first reweighted towards the posterior: the
    leave-one-out ratios are ``p(z) / q(z) / p(y_i | z)`` (Magnusson et al. 2019).
    """
    if "log_likelihood" not in idata.groups() or "posterior" not in idata.groups():
        return []
    ratios = importance_ratios(idata)
    checks = []
    for site, values in idata.log_likelihood.data_vars.items():
        if values.size == 0:
            continue
        if ratios is None:
            elpd, se, k = _loo_from_posterior(idata, site)
        else:
            elpd, se, k = _loo_from_approximation(np.asarray(values, float), ratios)
        bad = int(np.sum(k > LOO_K_MAX))
        message = (
            f"PSIS-LOO of {site!r}: elpd {elpd:.2f} (se {se:.2f}); {bad} of {k.size} points with Pareto k > {LOO_K_MAX}"
        )
        checks.append(Check("loo", "ok" if bad == 0 else "warn", float(k.max()), LOO_K_MAX, message))
    return checks


def _loo_from_posterior(idata, site):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = _arviz().loo(idata, pointwise=True, var_name=site)
    return float(loo.elpd_loo), float(loo.se), np.asarray(loo.pareto_k)


def _loo_from_approximation(log_lik, log_ratio):
    log_lik = log_lik.reshape(log_ratio.size, -1).T  # (observation, draw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_weights, k = _arviz().psislw(log_ratio[None, :] - log_lik)
    pointwise = scipy.special.logsumexp(log_weights + log_lik, axis=1)
    return float(pointwise.sum()), float(np.sqrt(pointwise.size * np.var(pointwise))), np.atleast_1d(k)


def reference_check(idata, context) -> list[Check]:
    reference = context.get("reference")
    if reference is None or "posterior" not in idata.groups():
        return []
    ours = _posterior_values(idata)
    theirs = _reference_draws(reference, ours)
    x = np.concatenate([_thinned(ours[k]).reshape(-1, int(np.prod(ours[k].shape[2:], dtype=int))) for k in theirs], 1)
    if isinstance(reference, Result):
        theirs = {
            k: _thinned(np.asarray(reference.draws[k], float)).reshape((-1,) + v.shape[1:]) for k, v in theirs.items()
        }
    y = np.concatenate([theirs[k].reshape(len(theirs[k]), -1) for k in theirs], 1)
    distance, critical = energy_distance_test(x, y, rng=np.random.default_rng(0))
    status = "ok" if distance <= critical else "fail"
    message = (
        f"energy distance to the reference draws over {sorted(theirs)}; "
        f"threshold is the permutation test's {1 - REFERENCE_ALPHA:.0%} quantile"
    )
    return [Check("reference", status, distance, critical, message)]


def _thinned(draws: np.ndarray) -> np.ndarray:
    """Keep every k-th draw of each chain, k = draws / ESS, so autocorrelated MCMC
    draws are close to independent, as the permutation test assumes."""
    chains, num_draws = draws.shape[:2]
    flat = draws.reshape(chains, num_draws, -1)
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = [float(az.ess(flat[:, :, i])) for i in range(flat.shape[-1]) if np.std(flat[:, :, i]) > 0]
    step = max(1, int(chains * num_draws / max(min(ess, default=chains * num_draws), 1.0)))
    return draws[:, ::step]


def _reference_draws(reference, ours: dict) -> dict[str, np.ndarray]:
    if isinstance(reference, Result):
        reference = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in reference.draws.items()}
    elif not isinstance(reference, dict):
        if len(ours) != 1:
            raise ValueError(
                "reference must be a dict of draws keyed by site name when the posterior has "
                f"several variables ({sorted(ours)}); got an array"
            )
        reference = {next(iter(ours)): np.asarray(reference)}
    common = {k: np.asarray(v, float) for k, v in reference.items() if k in ours}
    if not common:
        raise ValueError(f"reference names none of the posterior's variables {sorted(ours)}; got {sorted(reference)}")
    for name, values in common.items():
        if values.ndim == 0 or values.shape[1:] != ours[name].shape[2:] or len(values) == 0:
            raise ValueError(f"reference[{name!r}] must have shape (n, *{ours[name].shape[2:]}) with n >= 1, "
                             f"got {values.shape}")  # fmt: skip
        if not np.all(np.isfinite(values)):
            raise ValueError(f"reference[{name!r}] contains {int(np.sum(~np.isfinite(values)))} NaN or inf values")
    return common


def energy_distance_test(x, y, *, rng, max_points: int = 1000, num_permutations: int = 200):
    """Energy distance (Székely & Rizzo 2013) between samples ``x`` (n, d) and ``y`` (m, d)
    after standardising by ``y``'s scale, and the (1 - alpha) quantile of its
    permutation distribution under "same distribution"."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x = x[rng.choice(len(x), min(len(x), max_points), replace=False)]
    y = y[rng.choice(len(y), min(len(y), max_points), replace=False)]
    scale = np.where(y.std(0) > 0, y.std(0), 1.0)
    pooled = np.concatenate([x, y]) / scale
    distances = scipy.spatial.distance.cdist(pooled, pooled)
    n, m = len(x), len(y)
    # a split of the pooled points as the indicator of its first group: every sum in the
    # statistic is a quadratic form in it, so the observed split and all permutations
    # take one matrix product
    first = np.zeros((num_permutations + 1, n + m))
    first[0, :n] = 1.0
    for row in first[1:]:
        row[rng.permutation(n + m)[:n]] = 1.0
    row_sums = distances.sum(axis=1)
    within_first = np.einsum("pi,pi->p", first @ distances, first)
    to_first = first @ row_sums
    across = to_first - within_first
    within_second = row_sums.sum() - 2 * to_first + within_first
    statistic = 2 * across / (n * m) - within_first / n**2 - within_second / m**2
    return float(statistic[0]), float(np.quantile(statistic[1:], 1 - REFERENCE_ALPHA))


def registered_checks(idata, context) -> list[Check]:
    attrs = result_attrs(idata)
    checks = []
    model_class = str(attrs.get("model_class", ""))
    for check in _MODEL_CHECKS.get(model_class, []) + _MODEL_CHECKS.get(ANY_MODEL, []):
        checks.extend(check(idata, context))
    return checks


BUILTIN_CHECKS: tuple[CheckFn, ...] = (
    sampling_checks,
    divergence_check,
    pareto_khat_check,
    objective_check,
    loo_check,
    reference_check,
    registered_checks,
)
