"""Type-II maximum likelihood (or MAP) for Gaussian-process hyperparameters.

The hyperparameters are flattened into one unconstrained vector (logarithms of
the positive ones). :func:`fit_gp` runs SciPy's L-BFGS-B from ``num_restarts``
starting points, one after another. Each exact evaluation compiles only the kernel
matrix and its pullback; the factorisation and the inverse the gradient needs run
in LAPACK on the host (:func:`bayeskit.models._gp.factorise_on_host`), whose
``dpotri`` takes a third of the flops of the triangular solves a compiled program
would use, with nothing to compile. Bayesian optimisation refits small, padded data
sets every round instead, where one compiled loop reused across rounds is faster:
:func:`fit_hyperparameters`.
"""

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import hmc

from bayeskit.models import GaussianProcess
from bayeskit.models._gp import (
    _check_training_data,
    covariance_and_residual,
    covariance_cotangent,
    factorise_on_host,
    inverse_on_host,
    log_marginal_likelihood,
)
from bayeskit.models._keys import as_key
from bayeskit.models._sparse_gp import sparse_log_marginal_likelihood

from ._driver import RunOutput, reported, run
from ._lbfgs import LBFGS
from ._optimize import minimize, on_host
from ._result import Result
from ._validation import check_positive_int

# spread of the random restarts around the given hyperparameters, in log units
_RESTART_SPREAD = 1.0
_NUTS_TREE_DEPTH = 6  # a handful of hyperparameters: short trajectories suffice
# fit_gp's stopping rules: scikit-learn's (SciPy's defaults), on the relative change of the
# loss per iteration and on the largest gradient entry
_FTOL, _GTOL = 1e-9, 1e-5


@dataclass(frozen=True)
class _Parameterisation:
    """The loss over the fitted leaves of a GP, flattened into one unconstrained vector.

    Positive leaves (every kernel hyperparameter, the noise variance) are fitted on
    the log scale; the mean as it is. Fixed leaves travel with the data, so changing
    their values does not recompile.
    """

    treedef: Any
    free: tuple[bool, ...]
    positive: tuple[bool, ...]
    floors: tuple[float, ...]  # a positive leaf is floor + exp(z)
    shapes: tuple[tuple[int, ...], ...]
    priors: tuple  # (leaf index, numpyro distribution)

    def to_unconstrained(self, leaves) -> np.ndarray:
        # last round's fit may sit on the floor: start just above it
        parts = [
            np.ravel(np.log(np.maximum(leaf - floor, 1e-3 * floor)) if positive else leaf)
            for leaf, free, positive, floor in zip(leaves, self.free, self.positive, self.floors, strict=True)
            if free
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    def leaves(self, z, fixed_leaves, xp=jnp) -> list:
        """The leaves at ``z``: JAX arrays, or with ``xp=np`` NumPy ones (on the host, compiling nothing)."""
        out, offset, fixed = [], 0, iter(fixed_leaves)
        for free, positive, shape, floor in zip(self.free, self.positive, self.shapes, self.floors, strict=True):
            if not free:
                out.append(next(fixed))
                continue
            size = int(np.prod(shape))
            value = z[offset : offset + size].reshape(shape)
            offset += size
            out.append(floor + xp.exp(value) if positive else value)
        return out

    def host_gp(self, z, fixed_leaves) -> GaussianProcess:
        """The GP at ``z`` with NumPy leaves (floats for scalars), compiling nothing; not re-validated."""
        leaves = self.leaves(np.asarray(z), fixed_leaves, xp=np)
        return jax.tree_util.tree_unflatten(self.treedef, [_as_python(v) for v in leaves])

    def on_log_scale(self) -> np.ndarray:
        """Per entry of the unconstrained vector: is it the log of a positive leaf?"""
        parts = [
            np.full(int(np.prod(shape)), positive)
            for free, positive, shape in zip(self.free, self.positive, self.shapes, strict=True)
            if free
        ]
        return np.concatenate(parts) if parts else np.zeros(0, bool)

    def gp(self, z, fixed_leaves) -> tuple[GaussianProcess, list]:
        leaves = self.leaves(z, fixed_leaves)
        return jax.tree_util.tree_unflatten(self.treedef, leaves), leaves

    def log_prior(self, leaves):
        """In the hyperparameters' own space, so a prior's mode is where it says."""
        return sum((jnp.sum(prior.log_prob(leaves[i])) for i, prior in self.priors), 0.0)

    def __call__(self, z, data):
        """Negative log marginal likelihood minus the log prior density, on padded data:
        ``mask`` marks the real rows."""
        X, y, mask, fixed_leaves = data
        gp, leaves = self.gp(z, fixed_leaves)
        return -(log_marginal_likelihood(gp, X, y, mask) + self.log_prior(leaves))


@functools.partial(jax.jit, static_argnums=0)
def _exact_parts(parameterisation, z, data):
    """What an exact evaluation needs compiled: ``K + noise``, ``y - mean`` and the log prior."""
    X, y, fixed_leaves = data
    gp, leaves = parameterisation.gp(z, fixed_leaves)
    return *covariance_and_residual(gp, X, y), parameterisation.log_prior(leaves)


@functools.partial(jax.jit, static_argnums=0)
def _exact_parts_pullback(parameterisation, z, data, alpha, inverse):
    """The loss's gradient, given ``alpha = K^-1 r`` and (the lower triangle of) ``K^-1``."""
    _, pullback = jax.vjp(lambda z: _exact_parts(parameterisation, z, data), z)
    # loss = -(log N(r | 0, K) + log prior)
    return pullback((-covariance_cotangent(alpha, inverse), alpha, -jnp.ones(())))[0]


def _exact_objective(parameterisation, data):
    def value_and_grad(z):
        covariance, residual, log_prior = _exact_parts(parameterisation, z, data)
        fit = factorise_on_host(covariance, residual)
        value = -(fit.log_density + float(log_prior))
        if not np.isfinite(value):
            return math.inf, np.zeros_like(z)
        grad = _exact_parts_pullback(parameterisation, z, data, fit.alpha, inverse_on_host(fit.factor))
        return value, np.asarray(grad)

    return value_and_grad


@functools.partial(jax.jit, static_argnums=0)
@functools.partial(jax.value_and_grad, argnums=1)
def _sparse_loss(parameterisation, z, data):
    """Minus Titsias' bound on the log marginal likelihood, minus the log prior."""
    X, y, fixed_leaves, inducing_points = data
    gp, leaves = parameterisation.gp(z, fixed_leaves)
    bound = sparse_log_marginal_likelihood(gp.kernel, gp.noise_variance, gp.mean, X, y, inducing_points)
    return -(bound + parameterisation.log_prior(leaves))


def fit_gp(
    gp: GaussianProcess,
    X,
    y,
    *,
    num_restarts: int = 5,
    fixed: tuple[str, ...] = (),
    max_iter: int = 500,
    inducing_points=None,
    rng_key=0,
    progress: bool = True,
) -> Result:
    r"""Fit a GP's hyperparameters by maximising the log marginal likelihood.

    Maximises :math:`\log p(y \mid X, \theta) + \log p(\theta)` over every
    hyperparameter :math:`\theta` (kernel hyperparameters, a scalar noise variance
    and the constant mean) except those named in ``fixed``; :math:`p(\theta)` is
    ``gp.priors`` (hyperparameters without a prior have a flat one, so with no
    priors this is type-II maximum likelihood; Rasmussen & Williams 2006, ch. 5).
    Positive hyperparameters are optimised on the log scale. A per-point noise
    variance is known, not fitted.

    Parameters
    ----------
    gp : GaussianProcess
        The model; its hyperparameters are the first starting point.
    X, y : arrays (N, D) or (N,), and (N,)
    num_restarts : int
        Starting points: the given hyperparameters, then ``num_restarts - 1`` draws
        around them (log-normal, one log unit of spread), run one after another.
    fixed : tuple of str
        Hyperparameter names (as in ``gp.hyperparameters()``) held at their values.
    max_iter : int
        L-BFGS iterations per restart.
    inducing_points : array (M, D) or (M,), optional
        Maximise Titsias' collapsed lower bound with these inducing inputs (held fixed)
        instead of the exact log marginal likelihood: :math:`O(N M^2)` per evaluation,
        for N beyond a few thousand. ``res.model.condition(X, y, inducing_points=Z)``
        then gives the matching sparse posterior.

    Returns
    -------
    Result
        ``model`` the fitted GaussianProcess; ``params`` every hyperparameter by name;
        ``trace["loss"]`` (restart, iteration) the minimised negative log posterior;
        ``info``: ``log_marginal_likelihood`` (with inducing points, the bound),
        ``log_prior``, ``restart_losses``, ``best_restart``, ``restarts_converged``,
        ``num_iterations``, ``jitter``, ``near_duplicates``, ``loo_residuals``
        (standardised leave-one-out residuals, N(0, 1) under the model; exact fits
        only). A restart has converged when L-BFGS stopped on a tolerance (the loss
        changed by less than 1e-9 relative, or every gradient entry is below 1e-5,
        scikit-learn's rules), not on ``max_iter`` or a failed line search;
        ``converged`` is the best restart's.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeskit.models import GaussianProcess, kernels
    >>> X = np.linspace(0, 5, 30)
    >>> y = np.sin(X) + 0.1 * np.random.default_rng(0).normal(size=30)
    >>> res = fit_gp(GaussianProcess(kernels.RBF(1.0)), X, y, progress=False)
    >>> bool(0.005 < res.params["noise_variance"] < 0.05)
    True
    """
    if not isinstance(gp, GaussianProcess):
        raise TypeError(f"gp must be a bayeskit.models.GaussianProcess, got {type(gp).__name__}")
    X, y = _check_training_data(X, y)
    num_restarts = check_positive_int("num_restarts", num_restarts)
    max_iter = check_positive_int("max_iter", max_iter)
    names = list(gp.hyperparameters())
    fixed = _check_fixed(fixed, names, gp)
    # the per-point noise, the inducing inputs and the starting point's factorisation, checked once
    gp.condition(X, y, inducing_points=inducing_points)
    Z = None if inducing_points is None else jnp.asarray(np.asarray(inducing_points, float).reshape(-1, X.shape[1]))

    parameterisation, fixed_leaves, z0 = _parameterise(gp, fixed)
    if Z is None:
        objective = _exact_objective(parameterisation, (X, y, fixed_leaves))
    else:
        objective = on_host(functools.partial(_sparse_loss, parameterisation, data=(X, y, fixed_leaves, Z)))
    starts = _starting_points(parameterisation, z0, float(np.std(y)), num_restarts, rng_key)
    runs = [
        minimize(objective, start, max_iter=max_iter, ftol=_FTOL, gtol=_GTOL, progress=progress, desc=f"fit_gp {i + 1}")
        for i, start in enumerate(starts)
    ]
    losses = np.array([found.value for found in runs])
    best = _best_restart(losses)
    fitted = parameterisation.host_gp(runs[best].x, fixed_leaves)
    fitted = GaussianProcess(fitted.kernel, fitted.noise_variance, fitted.mean, dict(gp.priors))  # validated
    posterior = fitted.condition(X, y, inducing_points=Z)
    exact = {} if Z is not None else {"loo_residuals": posterior.loo_residuals().tolist()}
    trace = np.full((num_restarts, max(found.n_iter for found in runs)), np.nan)
    for row, found in zip(trace, runs, strict=True):
        row[: found.n_iter] = found.trace
    return Result(
        method="fit_gp",
        model=fitted,
        params=fitted.hyperparameters(),
        trace={"loss": trace},
        converged=runs[best].passed_tests,
        info={
            "log_marginal_likelihood": posterior.log_marginal_likelihood,
            "log_prior": -float(losses[best]) - posterior.log_marginal_likelihood,
            "restart_losses": losses.tolist(),
            "best_restart": best,
            "restarts_converged": [found.passed_tests for found in runs],
            "num_iterations": [found.n_iter for found in runs],
            "jitter": posterior.jitter,
            "near_duplicates": posterior.near_duplicates,
            "fixed": list(fixed),
            **exact,
        },
        observed_data={"y": np.asarray(y)},
    )


class HyperparameterFit(NamedTuple):
    gp: GaussianProcess  # the best restart's hyperparameters (NumPy leaves, not re-validated)
    best: int
    losses: np.ndarray  # final loss per restart (inf where it failed)
    converged: np.ndarray  # per restart: a convergence test passed (not merely stopped)
    run: RunOutput


def fit_hyperparameters(
    gp, X, y, mask, fixed, num_restarts, max_iter, rng_key, progress=False, noise_floor=0.0
) -> HyperparameterFit:
    """:func:`fit_gp`'s restarts on padded data (``mask`` marks the real rows), as one
    compiled loop that later calls with the same shapes reuse: the restarts are the
    chains of the shared driver, stepped one after another inside one program."""
    parameterisation, fixed_leaves, z0 = _parameterise(gp, fixed, noise_floor)
    mask = np.asarray(mask)
    y_scale = float(np.std(np.asarray(y)[mask]))
    starts = _starting_points(parameterisation, z0, y_scale, num_restarts, rng_key)
    step = LBFGS(parameterisation)  # a value, not a bound method, so the compiled loop is reused
    data = (X, y, mask, fixed_leaves)
    state = jax.tree.map(lambda *leaves: np.stack(leaves), *(step.init(z, data) for z in starts))
    out = run(
        step,
        state,
        data=data,
        max_iter=max_iter,
        objective="loss",
        monitor=reported("done"),
        num_chains=num_restarts,
        sequential_chains=True,  # one factorisation at a time anyway; a converged restart then stops costing
        progress=progress,
        desc="fit_hyperparameters",
    )
    losses = np.asarray(out.state.value)
    best = _best_restart(losses)
    best_gp = parameterisation.host_gp(out.state.z[best], fixed_leaves)
    converged = np.asarray(out.state.converged) & ~np.asarray(out.failed)
    return HyperparameterFit(best_gp, best, losses, converged, out)


def sample_hyperparameters(gp, X, y, mask, rng_key, *, num_warmup, num_draws, thinning, noise_floor=0.0):
    """NUTS draws of every hyperparameter from their posterior under ``gp.priors``,
    on (possibly padded) data, started at ``gp``'s values. Returns the draws as one GP
    whose leaves have a leading draw axis (not re-validated), and the number of
    divergent transitions after warm-up (thinned-out ones included)."""
    names = list(gp.hyperparameters())
    without = [name for name in names if name not in dict(gp.priors)]
    if without:
        raise ValueError(f"marginalising with NUTS needs a prior on every hyperparameter; {without} have none")
    parameterisation, fixed_leaves, z0 = _parameterise(gp, (), noise_floor)
    data = (X, y, np.ones(y.shape[0], bool) if mask is None else np.asarray(mask), fixed_leaves)
    z, divergent = _nuts(parameterisation, num_warmup, num_draws, thinning, z0, data, as_key(rng_key))
    leaves = jax.vmap(lambda z: parameterisation.leaves(z, fixed_leaves))(z)
    draws = jax.tree_util.tree_unflatten(parameterisation.treedef, [np.asarray(leaf) for leaf in leaves])
    return draws, int(divergent)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _nuts(parameterisation, num_warmup, num_draws, thinning, z0, data, key):
    """One NUTS chain in the unconstrained space, whose density carries the Jacobian
    of the log transform (the loss is a density in the hyperparameters' own space)."""
    on_log_scale = parameterisation.on_log_scale().astype(float)

    def potential(data):
        return lambda z: parameterisation(z, data) - on_log_scale @ z

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential, algo="NUTS")
    state = init_kernel(z0, num_warmup, max_tree_depth=_NUTS_TREE_DEPTH, model_args=(data,), rng_key=key)
    state = jax.lax.fori_loop(0, num_warmup, lambda _, state: sample_kernel(state, model_args=(data,)), state)

    def transition(_, carry):
        state, divergent = carry
        state = sample_kernel(state, model_args=(data,))
        return state, divergent + state.diverging

    def draw(state, _):
        state, divergent = jax.lax.fori_loop(0, thinning, transition, (state, 0))
        return state, (state.z, divergent)

    _, (z, divergent) = jax.lax.scan(draw, state, None, length=num_draws)
    return z, jnp.sum(divergent)


def _check_fixed(fixed, names, gp) -> tuple[str, ...]:
    if isinstance(fixed, str):
        fixed = (fixed,)
    if not isinstance(fixed, list | tuple | set | frozenset):
        raise TypeError(f"fixed must be a tuple of hyperparameter names from {names}, got {fixed!r}")
    fixed = tuple(fixed)
    unknown = [name for name in fixed if name not in names]
    if unknown:
        raise ValueError(f"fixed names unknown hyperparameters {unknown}; this GP has {names}")
    if np.ndim(gp.noise_variance) == 1 and "noise_variance" not in fixed:
        fixed += ("noise_variance",)  # one variance per point is data, not a hyperparameter
    return fixed


def _parameterise(gp: GaussianProcess, fixed, noise_floor: float = 0.0):
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(gp)
    names = list(gp.hyperparameters())
    leaves = [np.asarray(value, float) for _, value in with_paths]
    free = tuple(name not in fixed for name in names)
    positive = tuple(name != "mean" for name in names)
    floors = tuple(noise_floor if name == "noise_variance" else 0.0 for name in names)
    if "noise_variance" not in fixed and float(np.min(gp.noise_variance)) == 0.0:
        raise ValueError("noise_variance = 0 cannot be fitted on the log scale; start it > 0 or list it in fixed")
    prior_index = {name: i for i, name in enumerate(names)}
    priors = tuple((prior_index[name], prior) for name, prior in gp.priors)
    parameterisation = _Parameterisation(treedef, free, positive, floors, tuple(leaf.shape for leaf in leaves), priors)
    fixed_leaves = tuple(leaf for leaf, is_free in zip(leaves, free, strict=True) if not is_free)
    z0 = parameterisation.to_unconstrained(leaves)
    if z0.size == 0:
        raise ValueError("fixed names every hyperparameter: there is nothing to fit")
    return parameterisation, fixed_leaves, z0


def _best_restart(losses: np.ndarray) -> int:
    """The restart with the least loss; a failed restart's loss is inf."""
    best = int(np.argmin(losses))
    if not np.isfinite(losses[best]):
        raise ValueError("the log marginal likelihood is not finite at any restart; check the kernel and the data")
    return best


def _starting_points(parameterisation, z0, y_scale, num_restarts, rng_key):
    """The given point, then draws around it: log-normal for positive hyperparameters,
    normal with the data's spread for the mean."""
    scale = np.where(parameterisation.on_log_scale(), _RESTART_SPREAD, max(y_scale, 1e-12))
    # NumPy's generator seeded by the key: a JAX draw would compile for every new shape
    noise = np.random.default_rng(np.asarray(as_key(rng_key))).normal(size=(num_restarts - 1, z0.size))
    return np.concatenate([z0[None], z0 + noise * scale])


def _as_python(value: np.ndarray):
    return float(value) if value.ndim == 0 else value
