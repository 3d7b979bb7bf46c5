"""Expectation–maximisation: batch EM with restarts, stepwise (online) EM, and choosing K.

``em`` drives any model that exposes the EM protocol, written as pure JAX
functions of the model's native parameters:

``prepare(x, reference=None) -> data``
    the data as the loop reads it, computed once (``reference``, an earlier
    ``prepare`` output, puts the batches of a stream in one frame); the methods
    below take ``data``;
``initialize(rng_key, data, weights, *, init, means_init, reg_covar) -> (params, repaired)``
    starting parameters and a mask of the components repaired on the way;
``e_step(params, data, weights) -> (stats, log_lik)``
    expected sufficient statistics per unit of total weight, and each point's
    log-likelihood under ``params``;
``m_step(stats, reg_covar) -> params``;
``repair(params, data, weights, score, reg_covar) -> (params, repaired)``
    re-initialises collapsed components (``score`` ranks how well each point is
    explained, lowest worst); return the parameters unchanged and an all-False
    mask if nothing can collapse;
``lower_bound(params, data, weights)``
    the mean log-likelihood per unit weight;
``interpolate_stats(old, new, step_size)``
    the statistics of ``(1 - step_size) old + step_size new`` (online EM only);
``with_params(params)``, ``num_parameters(dim)``
    the fitted model, and its number of free parameters (for BIC and AIC);
``n_components``
    the fewest points with positive weight the model can be fitted to.

:class:`bayeskit.models.GaussianMixture` is the first such model.
"""

import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayeskit.models import GaussianMixture
from bayeskit.models._keys import as_key
from bayeskit.models._mixture import INITS
from bayeskit.models._numerics import as_real_array

from . import _driver
from ._errors import ConvergenceError
from ._result import Result
from ._schedules import RobbinsMonro
from ._validation import check_choice, check_positive_float, check_positive_int

CRITERIA = ("bic", "aic")
INIT_POINTS = 1000  # online EM starts from batch EM on at least this many leading points


def em(
    model,
    x,
    *,
    rng_key=0,
    max_iter: int = 500,
    tol: float = 1e-6,
    num_inits: int = 1,
    init: str = "kmeans++",
    weights=None,
    reg_covar: float = 1e-6,
    means_init=None,
    progress: bool = True,
) -> Result:
    """Fit ``model`` to ``x`` by expectation–maximisation (Dempster, Laird & Rubin 1977).

    Each iteration takes an E-step under the current parameters and an M-step
    from its statistics; the mean log-likelihood per sample never decreases, except
    right after a collapsed component is repaired. A run stops when the bound
    changes by less than ``tol`` between iterations (scikit-learn's rule) or after
    ``max_iter`` iterations. The ``num_inits`` restarts run together, vmapped in
    one compiled loop; the one with the highest final bound is the answer.

    Parameters
    ----------
    model
        A model with the EM protocol (module docstring), e.g. ``GaussianMixture(3)``.
    x : array (N, D)
        Data; finite, at least ``n_components`` points.
    rng_key : int or JAX key
        Seeds the initialisations.
    max_iter, tol
        Iteration cap per restart, and the convergence tolerance on the bound.
    num_inits : int
        Restarts from independent initialisations.
    init : {"kmeans++", "kmeans", "random"}
        k-means++ seeding, full k-means, or distinct data points at random.
    weights : array (N,), optional
        Non-negative frequency weights: a point of weight 2 counts as two copies.
    reg_covar : float
        Added to every variance so no covariance is singular.
    means_init : array (K, D), optional
        Fixed initial means (then ``num_inits`` must be 1).

    Returns
    -------
    Result
        ``params`` (public form), ``model`` (holding them), ``trace["log_likelihood"]``
        (mean log-likelihood per sample, ``(iteration,)``, or ``(num_inits,
        iteration)`` with NaN after a restart stopped), and ``info`` with
        ``log_likelihood`` (final bound of the answer), ``log_likelihood_per_init``,
        ``best_init``, ``n_iter``, ``converged_per_chain``, ``repairs`` (each
        ``{"init", "iteration", "component"}``, where ``iteration`` is the first
        trace index computed after the repair), ``bic``, ``aic``,
        ``num_parameters``, ``total_weight`` and ``warnings`` about the data.
    """
    started = time.perf_counter()
    _check_model(model)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_float("tol", tol, allow_zero=True)
    num_inits = check_positive_int("num_inits", num_inits)
    check_choice("init", init, INITS)
    reg_covar = check_positive_float("reg_covar", reg_covar, allow_zero=True)
    x, weights, warnings = _check_data(model, x, weights)
    if means_init is not None:
        means_init = _check_means_init(model, means_init, x.shape[1])
        if num_inits != 1:
            raise ValueError(f"means_init fixes the initialisation, so num_inits must be 1, got {num_inits}")

    fit = _batch_em(
        model, x, weights, rng_key, num_inits, init, means_init, reg_covar, max_iter, tol, progress=progress
    )
    out, final, best = fit.out, fit.final, fit.best
    fitted = model.with_params(jax.tree.map(lambda leaf: leaf[best], out.state))

    trace = out.trace["log_likelihood"]
    repairs = _repairs(fit.repaired_at_start, out.trace["repaired"])
    total = float(jnp.sum(weights))
    log_lik_total = float(final[best]) * total
    num_parameters = fitted.num_parameters(x.shape[1])
    info = {
        "log_likelihood": float(final[best]),
        "log_likelihood_per_init": final.tolist(),
        "best_init": best,
        "num_inits": num_inits,
        "n_iter": int(out.n_iter[best]),
        "n_iter_per_init": out.n_iter.tolist(),
        "converged_per_chain": out.converged.tolist(),
        "repairs": repairs,
        "num_parameters": num_parameters,
        "total_weight": total,
        "bic": -2 * log_lik_total + num_parameters * math.log(total),
        "aic": -2 * log_lik_total + 2 * num_parameters,
        "init": init,
        "tol": tol,
        "reg_covar": reg_covar,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
    }
    return Result(
        method="em",
        model=fitted,
        params=fitted.params,
        trace={"log_likelihood": trace[0] if num_inits == 1 else trace},
        converged=bool(out.converged[best]),
        info=info,
    )


class _BatchFit(NamedTuple):
    out: _driver.RunOutput  # the restarts' final native parameters, traces, flags
    final: np.ndarray  # final bound per restart, -inf where a restart failed
    best: int
    repaired_at_start: np.ndarray  # (num_inits, K)


def _batch_em(model, x, weights, rng_key, num_inits, init, means_init, reg_covar, max_iter, tol, *, progress):
    """Batch EM on validated data, restarts vmapped: the loop behind ``em``, also used
    to initialise ``online_em`` from the first batches."""
    keys = jax.random.split(as_key(rng_key), num_inits)
    data = _prepare(model, x)
    params, repaired_at_start = _initialize(model, keys, data, weights, means_init, init=init, reg_covar=reg_covar)
    out = _driver.run(
        _EMStep(model, reg_covar),
        params,
        data=(data, weights),
        max_iter=max_iter,
        objective="log_likelihood",
        monitor=_driver.absolute_change("log_likelihood", tol),
        num_chains=num_inits,
        progress=progress,
        desc="em",
    )
    final = np.asarray(_lower_bounds(model, out.state, data, weights))
    final = np.where(out.failed | ~np.isfinite(final), -np.inf, final)
    if not np.isfinite(final).any():
        raise ConvergenceError("em: every restart produced a non-finite log-likelihood; check x and reg_covar")
    return _BatchFit(out, final, int(np.argmax(final)), np.asarray(repaired_at_start))


@dataclass(frozen=True)
class _EMStep:
    """One EM iteration; a value (not a closure) so that the driver's compiled loop is
    reused by later fits of an equal model to data of the same shapes."""

    model: Any
    reg_covar: float

    def __call__(self, params, data):
        data, weights = data
        stats, log_lik = self.model.e_step(params, data, weights)
        new, repaired = self.model.repair(
            self.model.m_step(stats, self.reg_covar), data, weights, log_lik, self.reg_covar
        )
        mean_log_lik = jnp.sum(weights * log_lik) / jnp.sum(weights)
        return new, {"log_likelihood": mean_log_lik, "repaired": repaired}


@partial(jax.jit, static_argnums=0)
def _prepare(model, x):
    return model.prepare(x)


@partial(jax.jit, static_argnames=("model", "init", "reg_covar"))
def _initialize(model, keys, data, weights, means_init, *, init, reg_covar):
    def one(key):
        return model.initialize(key, data, weights, init=init, means_init=means_init, reg_covar=reg_covar)

    return jax.vmap(one)(keys)


@partial(jax.jit, static_argnums=0)
def _lower_bounds(model, params, data, weights):
    return jax.vmap(model.lower_bound, in_axes=(0, None, None))(params, data, weights)


def online_em(
    model,
    batches_or_x,
    *,
    batch_size: int | None = None,
    num_epochs: int = 1,
    step_size: RobbinsMonro | None = None,
    rng_key=0,
    init: str = "kmeans++",
    num_inits: int = 1,
    reg_covar: float = 1e-6,
    progress: bool = True,
) -> Result:
    r"""Stepwise (online) EM (Cappé & Moulines 2009) over data in batches.

    The running statistics move towards each batch's expected statistics,
    :math:`s_t = s_{t-1} + \eta_t (\hat s(B_t; \theta_{t-1}) - s_{t-1})`, and the
    parameters are the M-step of :math:`s_t`. With Robbins–Monro step sizes
    :math:`\eta_t` this converges to a stationary point of the likelihood of the
    whole stream, while only one batch is ever in memory. When the number of
    batches is known (an array, or a list of batches) the answer is the M-step of
    the statistics averaged over the second half of them (Polyak–Ruppert
    averaging, which removes most of the noise the last steps still carry).

    Parameters
    ----------
    model
        A model with the EM protocol (see :func:`em`).
    batches_or_x : array (N, D) or iterable of arrays (B, D)
        An array is shuffled and cut into ``batch_size`` rows each epoch (the last
        batch may be shorter); an iterable (a list included) is used in its own order,
        each batch 2-D: a list of 1-D arrays is refused, as it could be rows or batches. For
        ``num_epochs > 1`` it must be re-iterable (a list, not a generator).
    batch_size : int, optional
        Rows per batch when an array is given (default 256, at most N).
    num_epochs : int
        Passes over the data.
    step_size : RobbinsMonro, optional
        Step sizes; default ``RobbinsMonro(a=1.0, b=1.0, gamma=0.6)``. The first step
        must be at most 1 (a larger step extrapolates past the new statistics).
    init, num_inits, reg_covar
        The start is batch EM (:func:`em` with these options, at most 100
        iterations) on 1,000 points (or ``10 K`` if more): a random subset of an
        array, or the leading batches of a stream, which are then streamed like
        the others.

    Returns
    -------
    Result
        ``params``, ``model``, ``trace["log_likelihood"]`` (each batch's mean
        log-likelihood before its update: a noisy curve, not a monotone one) and
        ``info`` with ``num_batches``, ``num_points_seen``, ``num_averaged`` (batches
        in the average), ``step_size``, ``repairs`` and, when an array was given,
        ``log_likelihood`` on all of it.
    """
    started = time.perf_counter()
    _check_model(model, online=True)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    num_inits = check_positive_int("num_inits", num_inits)
    check_choice("init", init, INITS)
    reg_covar = check_positive_float("reg_covar", reg_covar, allow_zero=True)
    step_size = RobbinsMonro(a=1.0, b=1.0, gamma=0.6) if step_size is None else step_size
    if not isinstance(step_size, RobbinsMonro):
        raise TypeError(f"step_size must be a RobbinsMonro schedule, got {type(step_size).__name__}")
    if step_size(0) > 1:
        raise ValueError(f"step_size must start at most 1 (stepwise EM interpolates), got step_size(0)={step_size(0)}")
    rng_key, shuffle_key = jax.random.split(as_key(rng_key))

    full_x = None
    if isinstance(batches_or_x, np.ndarray | jax.Array):
        full_x, _, warnings = _check_data(model, batches_or_x, None)
        size = min(256, full_x.shape[0]) if batch_size is None else check_positive_int("batch_size", batch_size)
        batches = _shuffled_batches(full_x, size, num_epochs, shuffle_key)
        num_batches = num_epochs * math.ceil(full_x.shape[0] / size)
    else:
        if not isinstance(batches_or_x, Iterable):
            raise TypeError(f"batches_or_x must be an array (N, D) or an iterable of batches, got "
                            f"{type(batches_or_x).__name__}")  # fmt: skip
        if batch_size is not None:
            raise ValueError("batch_size applies to an array; an iterable of batches is used as it comes")
        if num_epochs > 1 and iter(batches_or_x) is batches_or_x:
            raise ValueError("num_epochs > 1 needs a re-iterable of batches (a list), not a one-shot iterator")
        batches = itertools.chain.from_iterable(itertools.repeat(batches_or_x, num_epochs))
        warnings = []
        num_batches = num_epochs * len(batches_or_x) if isinstance(batches_or_x, Sequence) else None
        batches = _checked_batches(batches)
    # Polyak–Ruppert: average the statistics over the second half of the batches
    average_from = num_batches // 2 if num_batches else math.inf

    wanted = max(INIT_POINTS, 10 * model.n_components)
    if full_x is None:
        first, batches = _first_batches(batches, wanted)
    else:  # a random subset of the array itself, never more than one copy of it
        first = full_x[np.asarray(jax.random.permutation(shuffle_key, full_x.shape[0]))[:wanted]]
    first, ones, _ = _check_data(model, first, None)
    fit = _batch_em(model, first, ones, rng_key, num_inits, init, None, reg_covar, 100, 1e-6, progress=False)
    params = jax.tree.map(lambda leaf: leaf[fit.best], fit.out.state)
    reference = _prepare(model, first)
    stats = model.e_step(params, reference, ones)[0]

    @jax.jit
    def update(state, batch, t, averaging):
        params, stats, average, num_averaged = state
        eta = step_size(t)
        ones = jnp.ones(batch.shape[0], batch.dtype)
        data = model.prepare(batch, reference)
        batch_stats, log_lik = model.e_step(params, data, ones)
        stats = model.interpolate_stats(stats, batch_stats, eta)
        # the running statistics summarise about batch_size / eta points
        params, repaired = model.repair(model.m_step(stats, reg_covar), data, ones / eta, log_lik, reg_covar)
        average = model.interpolate_stats(average, stats, jnp.where(averaging, 1.0 / (num_averaged + 1), 0.0))
        state = (params, stats, average, num_averaged + averaging)
        return state, {"log_likelihood": jnp.mean(log_lik), "repaired": repaired}

    def step(state, item):
        t, batch = item
        new_state, info = update(state[:4], batch, t, t >= average_from)
        return (*new_state, state[4] + batch.shape[0]), info

    out = _driver.run_python(
        step,
        (params, stats, stats, jnp.asarray(0), 0),
        enumerate(batches),
        objective="log_likelihood",
        total=num_batches,
        progress=progress,
        desc="online_em",
    )
    if out.failed:
        raise ConvergenceError(f"online_em: the log-likelihood of batch {int(out.n_iter)} is not finite")
    last, _, average, num_averaged, seen = out.state
    params = model.m_step(average, reg_covar) if int(num_averaged) else last
    fitted = model.with_params(params)
    info = {
        "num_batches": int(out.n_iter),
        "num_points_seen": int(seen),
        "total_weight": int(seen) / num_epochs,
        "num_epochs": num_epochs,
        "step_size": step_size.to_dict(),
        "num_averaged": int(num_averaged),
        "repairs": _repairs(np.zeros((1, 0)), out.trace.get("repaired", np.zeros((0, 1), bool))[None]),
        "reg_covar": reg_covar,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
    }
    if full_x is not None:
        whole = model.prepare(full_x, reference)
        info["log_likelihood"] = float(model.lower_bound(params, whole, jnp.ones(full_x.shape[0], full_x.dtype)))
    return Result(
        method="online_em",
        model=fitted,
        params=fitted.params,
        trace={"log_likelihood": out.trace.get("log_likelihood", np.zeros(0))},
        converged=bool(out.converged),
        info=info,
    )


def select_n_components(
    x,
    candidates: Iterable[int] = range(1, 11),
    *,
    covariance_type: str = "full",
    criterion: str = "bic",
    **em_options,
) -> Result:
    """Fit a Gaussian mixture for each number of components and keep the best by BIC or AIC.

    ``em_options`` go to :func:`em` for every candidate. The returned Result is the
    chosen fit, with ``info["selection"]`` holding the criterion, the candidates,
    their values and the choice.
    """
    check_choice("criterion", criterion, CRITERIA)
    if not isinstance(candidates, Iterable):
        raise TypeError(f"candidates must be an iterable of component counts, e.g. range(1, 7), got {candidates!r}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates must name at least one number of components, got none")
    for k in candidates:
        check_positive_int("candidates", k)
    fits = [em(GaussianMixture(k, covariance_type), x, **em_options) for k in candidates]
    values = [fit.info[criterion] for fit in fits]
    best = int(np.argmin(values))
    selection = {"criterion": criterion, "candidates": candidates, "values": values, "selected": candidates[best]}
    chosen = fits[best]
    return dataclasses.replace(chosen, info={**chosen.info, "selection": selection})


def _repairs(at_start: np.ndarray, during: np.ndarray) -> list[dict]:
    """Repairs as records; ``during`` is (init, step, K) and NaN-padded after a restart stopped."""
    records = [
        {"init": int(i), "iteration": 0, "component": int(k)} for i, k in zip(*np.nonzero(at_start), strict=True)
    ]
    flags = np.nan_to_num(np.asarray(during, float)) > 0
    for i, t, k in zip(*np.nonzero(flags), strict=True):
        records.append({"init": int(i), "iteration": int(t) + 1, "component": int(k)})
    return records


def _as_float_matrix(name: str, value) -> np.ndarray:
    array = as_real_array(name, value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (points, dimensions), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one point and one dimension, got shape {array.shape}")
    bad = np.nonzero(~np.all(np.isfinite(array), axis=1))[0]
    if bad.size:
        raise ValueError(f"{name} has NaN or inf in {bad.size} rows (first: {bad[:5].tolist()})")
    return array


def _checked_batches(batches):
    """Each batch validated as it arrives: finite, 2-D, as wide as the first."""
    width = None
    for index, batch in enumerate(batches):
        batch = _as_float_matrix(f"batch {index}", batch)
        width = batch.shape[1] if width is None else width
        if batch.shape[1] != width:
            raise ValueError(f"batch {index} has {batch.shape[1]} columns, the first batch had {width}")
        yield jnp.asarray(batch)


_PROTOCOL = ("prepare", "initialize", "e_step", "m_step", "repair", "lower_bound", "with_params", "num_parameters")


def _check_model(model, *, online: bool = False) -> None:
    missing = [name for name in _PROTOCOL + ("interpolate_stats",) * online if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"model must implement the EM protocol (e.g. GaussianMixture(3)); {type(model).__name__} lacks {missing}"
        )


def _check_data(model, x, weights):
    """Validated (x, weights) as JAX arrays, and warnings about the data."""
    x = _as_float_matrix("x", x)
    n, d = x.shape
    if weights is None:
        weights = np.ones(n)
    else:
        weights = as_real_array("weights", weights)
        if weights.shape != (n,):
            raise ValueError(f"weights must have shape ({n},) to match x, got {weights.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
    support = int(np.count_nonzero(weights))
    if support < model.n_components:
        raise ValueError(
            f"x has {support} points with positive weight but n_components={model.n_components}; "
            "need at least one point per component"
        )
    warnings = []
    constant = np.nonzero(np.ptp(x[weights > 0], axis=0) == 0)[0]
    if constant.size:
        warnings.append(f"x has constant columns {constant.tolist()}: their variance comes from reg_covar alone")
    distinct = len(np.unique(x[weights > 0], axis=0))
    if distinct < support:
        warnings.append(f"x has {support - distinct} duplicate rows ({distinct} distinct points)")
    if distinct < model.n_components:
        warnings.append(
            f"only {distinct} distinct points for {model.n_components} components: some components must share points"
        )
    return jnp.asarray(x), jnp.asarray(weights, dtype=jnp.asarray(x).dtype), warnings


def _check_means_init(model, means_init, dim):
    means = _as_float_matrix("means_init", means_init)
    if means.shape != (model.n_components, dim):
        raise ValueError(f"means_init must have shape ({model.n_components}, {dim}), got {means.shape}")
    return means


def _shuffled_batches(x, size, num_epochs, key):
    n = x.shape[0]
    for epoch_key in jax.random.split(key, num_epochs):
        order = np.asarray(jax.random.permutation(epoch_key, n))
        for start in range(0, n, size):
            yield x[order[start : start + size]]


def _first_batches(batches, wanted: int):
    """Concatenate leading batches until ``wanted`` rows (or the stream ends), and
    return them with an iterator that still yields every batch."""
    batches = iter(batches)
    taken = []
    while sum(b.shape[0] for b in taken) < wanted:
        batch = next(batches, None)
        if batch is None:
            break
        taken.append(batch)
    if not taken:
        raise ValueError("batches_or_x is empty")
    return jnp.concatenate(taken), itertools.chain(taken, batches)
