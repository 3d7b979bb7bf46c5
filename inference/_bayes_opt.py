"""Bayesian optimisation with a Gaussian-process surrogate: ``bayes_opt`` and the ask/tell ``BayesOpt``.

Internally the inputs live in the unit cube and the objective is minimised after
standardisation, so one set of weak default priors suits every problem. Each round
the surrogate's hyperparameters are refitted (MAP under those priors, warm-started
from the last round, or drawn by NUTS and integrated over), and the acquisition is
maximised by scoring many random points and refining the best of them by gradient
ascent, all in one compiled call. The data are padded to a few bucket sizes so the
compiled programs are reused as they grow.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import erfcx, log_ndtr, ndtr
from scipy.stats import qmc
from tqdm.auto import tqdm

from bayeskit.models import GaussianProcess, kernels
from bayeskit.models._gp import masked_covariance_and_residual
from bayeskit.models._keys import as_key
from bayeskit.models._numerics import as_real_array, robust_cholesky

from ._gp_fit import fit_hyperparameters, sample_hyperparameters
from ._result import Result
from ._validation import check_choice, check_positive_float, check_positive_int

ACQUISITIONS = ("log_ei", "ei", "ucb", "pi")
HYPERPARAMETERS = ("map", "nuts")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_SQRT_PI_OVER_2 = 0.5 * math.log(math.pi / 2)
_NUM_CANDIDATES = 1024  # random points scored per proposal
_NUM_REFINED = 8  # of which the best are refined by gradient ascent
_REFINE_ITERATIONS = 100
_REFINE_STEP = 0.05  # Adam's step in logit units
# least noise variance of the standardised surrogate (as BoTorch's constraint): points
# that crowd around an optimum would otherwise make the kernel matrix singular
_NOISE_FLOOR = 1e-6
# NUTS per round (hyperparameters="nuts"): a short warm-up suffices because each
# round's chain starts where the last one ended
_NUTS_WARMUP, _NUTS_DRAWS, _NUTS_THINNING = 128, 16, 4


@functools.lru_cache(maxsize=32)  # one object per dimension: compiled programs are reused across runs
def default_surrogate(dim: int) -> GaussianProcess:
    r"""The default surrogate on the unit cube with standardised outputs: Matérn 5/2 with
    ARD lengthscales, and weak priors (lengthscale :math:`\log\ell \sim N(\sqrt2 + \tfrac12\log D, 3)`,
    as Hvarfner et al. 2024 recommend so that the prior scales with the dimension;
    signal variance :math:`\log\sigma^2 \sim N(0, 1)`; noise :math:`\log\sigma_n^2 \sim N(-9, 3)`,
    which lets a deterministic objective be interpolated and a noisy one smoothed;
    constant mean :math:`N(0, 1)`, so unexplored regions are predicted at the level
    the data support, not at their average)."""
    loc = math.sqrt(2) + 0.5 * math.log(dim)
    return GaussianProcess(
        kernels.Matern52(lengthscale=np.full(dim, math.exp(loc - 1.5)), variance=1.0),
        noise_variance=1e-4,
        mean=0.0,
        priors={
            "kernel.lengthscale": dist.LogNormal(loc, math.sqrt(3)),
            "kernel.variance": dist.LogNormal(0.0, 1.0),
            "noise_variance": dist.LogNormal(-9.0, 3.0),
            "mean": dist.Normal(0.0, 1.0),
        },
    )


class BayesOpt:
    """Ask/tell Bayesian optimisation over a box.

    Parameters
    ----------
    bounds : sequence of (low, high)
        One pair per input dimension, ``low < high``, both finite.
    acquisition : {"log_ei", "ei", "ucb", "pi"}
        Expected improvement on the log scale (Ament et al. 2023: the same maximiser
        as EI, with gradients that do not vanish far from the incumbent), expected
        improvement, the (lower) confidence bound with ``beta``, or the probability
        of improvement.
    minimize : bool
        Minimise (default) or maximise the objective.
    num_initial : int
        Space-filling (Latin hypercube) points proposed before the surrogate is used.
    surrogate : GaussianProcess, optional
        The model on the unit cube with standardised outputs. Every hyperparameter,
        the constant mean included, is refitted each round; ``priors`` on them make
        the refit a MAP fit (a hyperparameter without one has a flat prior).
        Default :func:`default_surrogate`.
    hyperparameters : {"map", "nuts"}
        Refit the surrogate's hyperparameters each round by MAP (fast), or draw them
        from their posterior by NUTS and average the acquisition over the draws
        (slower; less easily misled by a few points, and it needs a prior on every
        hyperparameter, as the default surrogate has).
    num_restarts : int
        Restarts of each round's MAP fit (the first from last round's fit).
    beta : float
        Exploration weight of ``ucb``.
    rng_key : int or PRNG key

    Examples
    --------
    >>> opt = BayesOpt([(-2.0, 2.0)], num_initial=3, rng_key=0)
    >>> for _ in range(8):
    ...     x = opt.ask()
    ...     opt.tell(x, float((x[0] - 0.5) ** 2))
    >>> abs(float(opt.result().params["x"][0]) - 0.5) < 0.1
    True
    """

    def __init__(
        self,
        bounds,
        *,
        acquisition: str = "log_ei",
        minimize: bool = True,
        num_initial: int = 5,
        surrogate: GaussianProcess | None = None,
        hyperparameters: str = "map",
        num_restarts: int = 4,
        beta: float = 2.0,
        rng_key=0,
    ):
        self.bounds = _check_bounds(bounds)
        self.dim = self.bounds.shape[0]
        self.acquisition = check_choice("acquisition", acquisition, ACQUISITIONS)
        if not isinstance(minimize, bool | np.bool_):
            raise TypeError(f"minimize must be a bool, got {type(minimize).__name__} {minimize!r}")
        self.minimize = bool(minimize)
        self.hyperparameters = check_choice("hyperparameters", hyperparameters, HYPERPARAMETERS)
        self.num_initial = check_positive_int("num_initial", num_initial)
        self.num_restarts = check_positive_int("num_restarts", num_restarts)
        self.beta = check_positive_float("beta", beta)
        self.surrogate = default_surrogate(self.dim) if surrogate is None else surrogate
        if not isinstance(self.surrogate, GaussianProcess):
            raise TypeError(f"surrogate must be a GaussianProcess, got {type(self.surrogate).__name__}")
        kernels.check_input_dim(self.surrogate.kernel, self.dim)
        self._draws = _as_draws(self.surrogate)  # the hyperparameters the acquisition averages over
        self._key = as_key(rng_key)
        seed = int(jax.random.randint(self._next_key(), (), 0, 2**31 - 1))
        self._design = qmc.LatinHypercube(d=self.dim, seed=seed)
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.rounds: list[dict] = []  # one per surrogate fit: hyperparameters and the acquisition's optimisation

    # -- public API ----------------------------------------------------------------

    def ask(self, n: int | None = None) -> np.ndarray:
        """The next point ``(D,)``, or ``n`` points ``(n, D)`` to evaluate together."""
        count = 1 if n is None else check_positive_int("n", n)
        initial_left = max(self.num_initial - len(self.y), 0)
        from_design = min(count, initial_left)
        units = [self._design.random(from_design)] if from_design else []
        if count > from_design:
            units.append(self._propose(count - from_design))
        points = self._from_unit(np.concatenate(units))
        return points[0] if n is None else points

    def tell(self, x, y) -> None:
        """Record evaluations: ``x`` (D,) with a scalar ``y``, or (n, D) with (n,).

        Past evaluations from anywhere can be told (a warm start). A failed evaluation
        is told as NaN or inf: it is kept in the record, and the surrogate sees it as
        the worst value observed so far, which steers the search away from it.
        """
        x = as_real_array("x", x)
        x = x[None] if x.ndim == 1 else x
        if y is None or (isinstance(y, list | tuple) and any(v is None for v in y)):
            raise TypeError("y must be numbers (NaN or inf for a failed evaluation), got None")
        y = np.atleast_1d(as_real_array("y", y))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be ({self.dim},) or (n, {self.dim}), got shape {np.shape(x)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have one value per point ({x.shape[0]}), got shape {y.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        low, high = self.bounds[:, 0], self.bounds[:, 1]
        if np.any(x < low) or np.any(x > high):
            raise ValueError(f"x lies outside the bounds {self.bounds.tolist()}: {x.tolist()}")
        self.X.extend(x)
        self.y.extend(y.tolist())

    def result(self) -> Result:
        """The run so far as a Result (see :func:`bayes_opt`)."""
        if not self.y:
            raise ValueError("no evaluations have been told yet")
        X, y = np.asarray(self.X), np.asarray(self.y)
        ok = np.isfinite(y)
        if not np.any(ok):
            raise ValueError("every evaluation failed (NaN or inf): there is no best point")
        signed = np.where(ok, y if self.minimize else -y, np.inf)
        best = int(np.argmin(signed))
        best_so_far = np.minimum.accumulate(signed)
        best_value = np.where(np.isfinite(best_so_far), best_so_far if self.minimize else -best_so_far, np.nan)
        info = {
            "X": X.tolist(),
            "y": [float(v) if np.isfinite(v) else None for v in y],
            "failed": np.flatnonzero(~ok).tolist(),
            "bounds": self.bounds.tolist(),
            "acquisition": self.acquisition,
            "minimize": self.minimize,
            "rounds": self.rounds,
        }
        if int(np.sum(ok)) >= 2:
            info["best_posterior_mean"] = self._best_posterior_mean()
        trace = {"best_value": best_value}
        trace.update(self._hyperparameter_trace())
        return Result(
            method="bayes_opt",
            model=self.surrogate,
            params={"x": X[best], "value": np.asarray(y[best])},
            trace=trace,
            converged=True,
            info=info,
            observed_data={"y": y},
        )

    # -- internals -----------------------------------------------------------------

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def _to_unit(self, x):
        return (x - self.bounds[:, 0]) / (self.bounds[:, 1] - self.bounds[:, 0])

    def _from_unit(self, u):
        x = self.bounds[:, 0] + u * (self.bounds[:, 1] - self.bounds[:, 0])
        return np.clip(x, self.bounds[:, 0], self.bounds[:, 1])  # round-off at the faces only

    def _standardised(self):
        """Unit-cube inputs and standardised values to minimise (failures at the worst value)."""
        U = self._to_unit(np.asarray(self.X))
        y = np.asarray(self.y)
        ok = np.isfinite(y)
        if not np.any(ok):
            raise ValueError("every evaluation so far failed (NaN or inf): the surrogate has nothing to fit")
        v = np.where(ok, y if self.minimize else -y, np.nan)
        v = np.where(ok, v, np.nanmax(v))
        centre, scale = float(np.mean(v)), float(np.std(v))
        scale = scale if scale > 0 else 1.0
        return U, (v - centre) / scale, centre, scale

    def _fit(self):
        """Refit the surrogate to the data so far; returns this round's record and the padded data."""
        U, v, _, _ = self._standardised()
        X_pad, v_pad, mask = _pad(U, v, _bucket(len(v)))
        priors = dict(self.surrogate.priors)
        if self.hyperparameters == "nuts":
            self._draws, divergences = sample_hyperparameters(
                self.surrogate,
                X_pad,
                v_pad,
                mask,
                self._next_key(),
                num_warmup=_NUTS_WARMUP,
                num_draws=_NUTS_DRAWS,
                thinning=_NUTS_THINNING,
                noise_floor=_NOISE_FLOOR,
            )
            last = jax.tree_util.tree_map(lambda leaf: leaf[-1], self._draws)  # where the next round's chain starts
            self.surrogate = GaussianProcess(last.kernel, last.noise_variance, last.mean, priors)
            names = list(self.surrogate.hyperparameters())
            leaves = jax.tree_util.tree_leaves(self._draws)
            # medians: early on, with few points, the long right tails of the priors dominate the means
            record = {name: np.median(leaf, axis=0).tolist() for name, leaf in zip(names, leaves, strict=True)}
            record["divergences"] = divergences
            return record, X_pad, v_pad, mask
        fit = fit_hyperparameters(
            self.surrogate,
            X_pad,
            v_pad,
            mask,
            (),
            self.num_restarts,
            200,
            self._next_key(),
            noise_floor=_NOISE_FLOOR,
        )
        self.surrogate = GaussianProcess(fit.gp.kernel, fit.gp.noise_variance, fit.gp.mean, priors)
        self._draws = _as_draws(self.surrogate)
        record = {name: np.asarray(value).tolist() for name, value in self.surrogate.hyperparameters().items()}
        return record, X_pad, v_pad, mask

    def _propose(self, count: int) -> np.ndarray:
        """``count`` points by maximising the acquisition; beyond the first, each is
        added to the data at the surrogate's mean (kriging believer) before the next."""
        record, X_pad, v_pad, mask = self._fit()
        n = int(np.sum(mask))
        if n + count > X_pad.shape[0]:
            X_pad, v_pad, mask = _pad(X_pad[:n], v_pad[:n], _bucket(n + count))
        points, successes = [], []
        for _ in range(count):
            u, improved, mean = _maximise_acquisition(
                self._draws, X_pad, v_pad, mask, self.acquisition, self.beta, self._next_key()
            )
            points.append(np.asarray(u))
            successes.append(bool(improved))
            X_pad[n], v_pad[n], mask[n] = u, float(mean), True
            n += 1
        record["acquisition_refined"] = successes
        record["num_evaluations"] = len(self.y)
        self.rounds.append(record)
        return np.stack(points)

    def _best_posterior_mean(self) -> dict:
        """The evaluated point where the surrogate's mean is best: for a noisy objective
        a better answer than the best single (noisy) observation."""
        U, v, centre, scale = self._standardised()
        X_pad, v_pad, mask = _pad(U, v, _bucket(len(v)))
        means = np.asarray(_posterior_mean_at_data(self._draws, X_pad, v_pad, mask))[: len(v)]
        means = np.where(np.isfinite(np.asarray(self.y)), means, np.inf)
        best = int(np.argmin(means))
        value = centre + scale * float(means[best])
        return {"x": np.asarray(self.X[best]).tolist(), "mean": value if self.minimize else -value}

    def _hyperparameter_trace(self) -> dict:
        """Each round's surrogate hyperparameters (with NUTS, their posterior medians) as
        ``(1, round, ...)`` arrays."""
        if not self.rounds:
            return {}
        names = self.surrogate.hyperparameters()
        return {f"surrogate.{name}": np.asarray([r[name] for r in self.rounds])[None] for name in names}


def bayes_opt(
    f: Callable,
    bounds,
    *,
    num_iterations: int = 30,
    num_initial: int = 5,
    acquisition: str = "log_ei",
    minimize: bool = True,
    batch_size: int = 1,
    X_init=None,
    y_init=None,
    surrogate: GaussianProcess | None = None,
    hyperparameters: str = "map",
    num_restarts: int = 4,
    rng_key=0,
    progress: bool = True,
) -> Result:
    """Minimise (or maximise) a black-box ``f(x) -> float`` over a box.

    ``num_initial`` Latin-hypercube points first (fewer if a warm start ``X_init``,
    ``y_init`` is given), then ``num_iterations`` rounds of ``batch_size`` points
    chosen by the acquisition: ``num_initial + num_iterations * batch_size``
    evaluations in all. An evaluation that raises, or returns NaN or inf, is
    recorded as failed and the loop goes on.

    Returns
    -------
    Result
        ``params["x"]``, ``params["value"]``: the best point evaluated and its value;
        ``trace["best_value"]``: best so far per evaluation (warm-start points first);
        ``trace["surrogate.<hyperparameter>"]``: (1, round, ...) the surrogate's fit per round;
        ``info``: ``X``, ``y`` (every evaluation in order; None where it failed),
        ``failed`` (their indices), ``errors`` (messages of exceptions),
        ``best_posterior_mean`` (``x`` and the surrogate's ``mean`` there, for noisy
        objectives), ``rounds`` (hyperparameters, whether the acquisition's refinement
        improved on random search, and with NUTS the divergent transitions, per round),
        ``bounds``. See :class:`BayesOpt` for the other arguments.

    Examples
    --------
    >>> res = bayes_opt(lambda x: (x[0] - 1.0) ** 2, [(-3.0, 3.0)], num_iterations=6, num_initial=3, progress=False)
    >>> abs(float(res.params["x"][0]) - 1.0) < 0.2
    True
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    num_iterations = check_positive_int("num_iterations", num_iterations, allow_zero=True)
    batch_size = check_positive_int("batch_size", batch_size)
    opt = BayesOpt(
        bounds,
        acquisition=acquisition,
        minimize=minimize,
        num_initial=num_initial,
        surrogate=surrogate,
        hyperparameters=hyperparameters,
        num_restarts=num_restarts,
        rng_key=rng_key,
    )
    if (X_init is None) != (y_init is None):
        raise ValueError("X_init and y_init come together: give both or neither")
    if X_init is not None:
        X_init = as_real_array("X_init", X_init)
        if X_init.ndim == 1 and opt.dim == 1:
            X_init = X_init[:, None]  # n points of a one-dimensional problem
        if X_init.ndim != 2:
            raise ValueError(f"X_init must be (n, {opt.dim}), got shape {X_init.shape}")
        opt.tell(X_init, as_real_array("y_init", y_init).reshape(-1))
    errors = []

    def evaluate(points):
        values = []
        for x in points:
            try:
                values.append(float(f(x)))
            except Exception as error:  # noqa: BLE001  (a failed evaluation is data, not the end of the run)
                errors.append({"evaluation": len(opt.y) + len(values), "error": f"{type(error).__name__}: {error}"})
                values.append(math.nan)
        opt.tell(points, values)

    initial = max(num_initial - len(opt.y), 0)
    if initial:
        evaluate(opt.ask(initial))
    try:
        for _ in tqdm(range(num_iterations), desc="bayes_opt", disable=not progress, delay=1.0, leave=False):
            evaluate(opt.ask(batch_size))
        res = opt.result()
    except ValueError as exc:
        if not errors or np.isfinite(opt.y).any():
            raise
        raise ValueError(f"{exc}; the last evaluation raised {errors[-1]['error']}") from exc
    res.info["errors"] = errors
    return res


# -- compiled pieces -----------------------------------------------------------------


def _check_bounds(bounds) -> np.ndarray:
    bounds = as_real_array("bounds", bounds)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] == 0:
        raise ValueError(f"bounds must be a sequence of (low, high) pairs, got shape {bounds.shape}")
    if not np.all(np.isfinite(bounds)):
        raise ValueError(f"bounds must be finite, got {bounds.tolist()}")
    bad = np.flatnonzero(bounds[:, 0] >= bounds[:, 1])
    if bad.size:
        raise ValueError(f"bounds need low < high; dimension {int(bad[0])} has {bounds[bad[0]].tolist()}")
    return bounds


def _bucket(n: int) -> int:
    """Padded size: a power of two (at least 64), so the data grow through few shapes
    (a typical run of tens of evaluations compiles once)."""
    return max(64, 1 << (n - 1).bit_length())


def _pad(U, v, size):
    n = U.shape[0]
    X_pad, v_pad = np.zeros((size, U.shape[1])), np.zeros(size)
    X_pad[:n], v_pad[:n] = U, v
    return X_pad, v_pad, np.arange(size) < n


def _as_draws(gp):
    """One GP as a single 'draw': every leaf with a leading axis of length 1."""
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[None], gp)


@jax.jit
def _posterior_factors(draws, X, v, mask):
    """Per draw, the Cholesky factor's inverse and the weights of the masked posterior
    (padded rows inert). A sequential map: batched LAPACK calls stall XLA:CPU."""
    return jax.lax.map(lambda gp: _factors(gp, X, v, mask), draws)


def _factors(gp, X, v, mask):
    covariance, residual = masked_covariance_and_residual(gp, X, v, mask)
    factor, _ = robust_cholesky(covariance)
    inverse_factor = solve_triangular(factor, jnp.eye(v.shape[0], dtype=factor.dtype), lower=True)
    return inverse_factor, inverse_factor.T @ (inverse_factor @ residual)


def _moments(draws, X, mask, inverse_factors, alphas, u):
    """Posterior mean and standard deviation of the latent f at one point ``u`` (D,),
    per draw. Matrix products only (no LAPACK call), so it vmaps over many points cheaply."""
    return jax.vmap(_moments_one, in_axes=(0, None, None, 0, 0, None))(draws, X, mask, inverse_factors, alphas, u)


def _moments_one(gp, X, mask, inverse_factor, alpha, u):
    cross = jnp.where(mask, gp.kernel.cross(X, u[None])[:, 0], 0.0)
    mean = gp.mean + cross @ alpha
    v = inverse_factor @ cross
    variance = gp.kernel.diag(u[None])[0] - v @ v
    return mean, jnp.sqrt(jnp.maximum(variance, 1e-12))


def _log_h(z):
    """``log(phi(z) + z Phi(z))``, the log of EI's standardised form, stable for z << 0
    (Ament et al. 2023, eq. 9)."""
    direct = jnp.log(jnp.maximum(jnp.exp(-0.5 * z**2 - _LOG_SQRT_2PI) + z * ndtr(z), 1e-300))
    tail_z = jnp.minimum(z, -1.0)
    log_ratio = jnp.log(erfcx(-tail_z / math.sqrt(2)) * jnp.abs(tail_z)) + _LOG_SQRT_PI_OVER_2
    log1mexp = jnp.where(log_ratio > -math.log(2), jnp.log(-jnp.expm1(log_ratio)), jnp.log1p(-jnp.exp(log_ratio)))
    tail = -0.5 * tail_z**2 - _LOG_SQRT_2PI + log1mexp
    return jnp.where(z > -1.0, direct, tail)


def _acquisition_value(kind, beta, means, sds, incumbent):
    """Larger is better; the objective is minimised. With several hyperparameter draws,
    the acquisition averaged over them (on the log scale for ``log_ei`` and ``pi``, the
    log of the average)."""
    values = _acquisition_per_draw(kind, beta, means, sds, incumbent)
    if kind in ("log_ei", "pi"):
        return jax.nn.logsumexp(values) - math.log(values.shape[0])
    return jnp.mean(values)


def _acquisition_per_draw(kind, beta, mean, sd, incumbent):
    z = (incumbent - mean) / sd
    if kind == "log_ei":
        return _log_h(z) + jnp.log(sd)
    if kind == "ei":
        return sd * (jnp.exp(-0.5 * z**2 - _LOG_SQRT_2PI) + z * ndtr(z))
    if kind == "pi":
        return log_ndtr(z)  # the log keeps gradients alive far from the incumbent
    return -(mean - jnp.sqrt(beta) * sd)


@jax.jit
def _posterior_mean_at_data(draws, X, v, mask):
    """The surrogate's mean (averaged over draws) at every row of ``X``."""
    inverse_factors, alphas = _posterior_factors(draws, X, v, mask)
    return jax.vmap(lambda u: jnp.mean(_moments(draws, X, mask, inverse_factors, alphas, u)[0]))(X)


@functools.partial(jax.jit, static_argnames=("kind",))
def _maximise_acquisition(draws, X, v, mask, kind, beta, key):
    """Score random points, refine the best by gradient ascent (Adam) in a logit
    parameterisation of the cube. Returns the point, whether refinement beat the best
    random point, and the surrogate's mean there (for the kriging believer)."""
    inverse_factors, alphas = _posterior_factors(draws, X, v, mask)

    def moments(u):
        return _moments(draws, X, mask, inverse_factors, alphas, u)

    # the incumbent: the lowest posterior mean at the data (the lowest observation
    # when the noise is negligible, and robust to noise otherwise)
    incumbent = jnp.min(jnp.where(mask, jnp.mean(jax.vmap(moments)(X)[0], axis=1), jnp.inf))

    def score(u):
        mean, sd = moments(u)
        return _acquisition_value(kind, beta, mean, sd, incumbent)

    candidates = jax.random.uniform(key, (_NUM_CANDIDATES, X.shape[1]), dtype=X.dtype)
    scores = jax.vmap(score)(candidates)
    scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
    top = jax.lax.top_k(scores, _NUM_REFINED)[1]
    w = jax.scipy.special.logit(jnp.clip(candidates[top], 1e-6, 1 - 1e-6))

    optimiser = optax.adam(_REFINE_STEP)
    gradient = jax.vmap(jax.grad(lambda w: -score(jax.nn.sigmoid(w))))

    def ascend(_, carry):
        w, state = carry
        updates, state = optimiser.update(gradient(w), state)
        return optax.apply_updates(w, updates), state

    w, _ = jax.lax.fori_loop(0, _REFINE_ITERATIONS, ascend, (w, optimiser.init(w)))
    refined = jax.nn.sigmoid(w)
    refined_scores = jax.vmap(score)(refined)
    refined_scores = jnp.where(jnp.isfinite(refined_scores), refined_scores, -jnp.inf)
    best = jnp.argmax(refined_scores)
    improved = refined_scores[best] >= scores[top[0]]
    u = jnp.where(improved, refined[best], candidates[top[0]])
    return u, improved, jnp.mean(moments(u)[0])
