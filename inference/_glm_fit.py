"""Maximum likelihood (or MAP under a Gaussian prior) for GLMs, with the Laplace posterior.

The penalised negative log-likelihood of a GLM is convex, so Newton's method with a
Cholesky solve and a backtracking line search converges from the intercept-only
start (this is IRLS with the observed Hessian, which equals Fisher scoring for
canonical links). Several GLMs that share one design (the neurons of a population)
are fitted together: every step evaluates all of them with one matrix product,
and each stops on its own Newton decrement. The Hessian at the optimum is the
precision of the Laplace posterior, so the posterior comes with every fit. With many
rows, the start comes from a row subsample, so that the full-data Newton steps, which
cost O(N q^2) each, are typically two.
"""

import functools
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayeskit.models import LNP, PopulationGLM
from bayeskit.models._glm import LinearProblem
from bayeskit.models._keys import as_key

from ._driver import reported, run
from ._errors import ConvergenceError
from ._lbfgs import LBFGS
from ._result import Result
from ._time_rescaling import time_rescaling_test
from ._validation import check_choice, check_positive_float, check_positive_int

# importance ratios for Pareto k-hat cost N * num_samples * p multiply-adds per
# problem; above this they are skipped (and the skip recorded)
_IMPORTANCE_BUDGET = 2e9
_DRAW_CHUNK_ELEMENTS = 2**24  # linear predictors held at once while evaluating draws
_PAD_MAX_ELEMENTS = 2**23  # designs larger than this are fitted at their own shape
_GRAM_BLOCK_ROWS = 256  # rows per block when forming the Hessian
_PRODUCT_BLOCK_ROWS = 4096  # rows per block in r^T X and in the objective-and-gradient pass
# from this many coefficients per problem, "auto" starts Newton from an L-BFGS solution
LBFGS_MIN_COEFFICIENTS = 40
# from this many rows (and SUBSAMPLE_ROWS_PER_COEFFICIENT in the subsample), "auto" starts
# Newton from a fit that uses 1 / SUBSAMPLE_FRACTION of the rows
SUBSAMPLE_MIN_ROWS = 50_000
SUBSAMPLE_FRACTION = 16
SUBSAMPLE_ROWS_PER_COEFFICIENT = 20
_SUBSAMPLE_TOL = 1e-2  # nats: the start's fits stop here, far inside the subsample's sampling error
_SUBSAMPLED_NEWTON_MAX_ITER = 8  # a bound on its linearly converging steps: full-data Newton finishes


class NewtonState(NamedTuple):
    beta: jax.Array  # (m, q) intercept first
    decrement: jax.Array  # (m,) Newton decrement g^T H^-1 g at beta
    factor: jax.Array  # (m, q, q) Cholesky factor of the Hessian at beta
    done: jax.Array  # (m,) bool
    # the objective (m,), linear predictor (N, m) and gradient (m, q) at beta, evaluated by the
    # line search that reached it (for a done problem, possibly at the point before its last step)
    value: jax.Array
    eta: jax.Array
    grad: jax.Array


@dataclass(frozen=True)
class Newton:
    """Damped Newton steps on ``m`` penalised GLM objectives sharing a design.

    ``objective_j = -sum_i w_i log p(y_ij | eta_ij) + l2 / 2 * |beta_j[1:]|^2``; a
    problem is done once half its Newton decrement (the predicted decrease, in nats)
    is below ``tol``. Coefficients outside ``free`` stay at zero.
    """

    family: object  # the GLM whose likelihood is used (hashable: it keys the compiled loop)
    tol: float
    max_backtracks: int = 30
    armijo: float = 1e-4

    def init(self, beta, data) -> NewtonState:
        m, q = beta.shape
        eye = jnp.broadcast_to(jnp.eye(q, dtype=beta.dtype), (m, q, q))
        value, eta, grad = _merit(self, beta, data)
        return NewtonState(beta, jnp.full((m,), jnp.inf, beta.dtype), eye, jnp.zeros(m, bool), value, eta, grad)

    def objective(self, beta, data, eta=None):
        """Per problem (m,); ``eta`` is the linear predictor at ``beta`` when already computed."""
        X, y, offset, weights, _, l2 = data
        eta = predictor(X, beta, offset) if eta is None else eta
        return -weights @ self.family.log_likelihood(eta, y) + 0.5 * l2 * jnp.sum(beta[:, 1:] ** 2, axis=1)

    def hessian(self, beta, data, eta):
        """Hessian (m, q, q) at ``beta``, whose linear predictor is ``eta`` (N, m), with fixed
        coefficients masked out."""
        del beta  # eta carries it
        X, y, _, weights, free, l2 = data

        def score(e):
            return jax.grad(lambda e: jnp.sum(self.family.log_likelihood(e, y)))(e)

        # -w_i d^2 log p(y_ij | eta) / d eta^2 >= 0: the likelihoods are log-concave
        curvature = -weights[:, None] * jax.jvp(score, (eta,), (jnp.ones_like(eta),))[1]
        q = free.shape[1]
        H = _gram(X, curvature) + l2 * jnp.diag(jnp.ones(q).at[0].set(0.0))
        return jnp.where(free[:, :, None] & free[:, None, :], H, jnp.eye(q, dtype=H.dtype))

    def merit(self, beta, data):
        """The objective the line search decreases, with the linear predictor (N, m) and the
        gradient (m, q, fixed coefficients masked out) at ``beta``, from one pass over the rows:
        each block of X is read once for both of its products."""
        X, y, offset, weights, free, l2 = data

        def block(x, y, offset, w):
            eta = x @ beta[:, 1:].T + beta[:, 0] + offset[:, None]
            loglik, pullback = jax.vjp(lambda e: w[:, None] * self.family.log_likelihood(e, y), eta)
            (score,) = pullback(jnp.ones_like(eta))
            score_x = jnp.concatenate([jnp.sum(score, 0)[:, None], score.T @ x], axis=1)
            return (jnp.sum(loglik, 0), score_x), eta

        (loglik, score_x), eta = _over_row_blocks(block, _PRODUCT_BLOCK_ROWS, X, y, offset, weights)
        penalised = beta.at[:, 0].set(0.0)
        value = -loglik + 0.5 * l2 * jnp.sum(penalised**2, axis=1)
        return value, eta, (-score_x + l2 * penalised) * free

    def __call__(self, state: NewtonState, data):
        # the objective, linear predictor and gradient at beta come from the line search that reached it
        value, grad = state.value, state.grad
        factor = jnp.linalg.cholesky(self.hessian(state.beta, data, state.eta))
        direction = -jax.vmap(lambda L, g: jax.scipy.linalg.cho_solve((L, True), g))(factor, grad)
        decrement = -jnp.sum(grad * direction, axis=1)
        # a problem within tol takes the full step unsearched: its predicted decrease is below
        # what the objective's round-off resolves, and the step is the quadratic refinement
        converged = 0.5 * decrement <= self.tol

        def sufficient(step, trial):
            return converged | (jnp.isfinite(trial) & (trial <= value - self.armijo * step * decrement))

        def not_accepted(carry):
            tries, step, trial = carry[:3]
            return jnp.any(~state.done & ~sufficient(step, trial)) & (tries < self.max_backtracks)

        def backtrack(carry):
            tries, step, trial = carry[:3]
            step = jnp.where(sufficient(step, trial) | (tries == 0), step, 0.5 * step)
            return tries + 1, step, *self.merit(state.beta + step[:, None] * direction, data)

        start = (0, jnp.ones_like(value), jnp.full_like(value, jnp.inf), state.eta, state.grad)
        _, step, trial, eta, trial_grad = jax.lax.while_loop(not_accepted, backtrack, start)
        accepted = sufficient(step, trial)
        move = accepted & ~state.done
        beta = jnp.where(move[:, None], state.beta + step[:, None] * direction, state.beta)
        done = state.done | converged | ~accepted
        # a problem that took its final step unsearched has no trial there: it is done, and
        # keeps the values before that step
        evaluated = move & jnp.isfinite(trial)
        value, eta = jnp.where(evaluated, trial, value), jnp.where(evaluated[None, :], eta, state.eta)
        grad = jnp.where(evaluated[:, None], trial_grad, grad)
        new = NewtonState(beta, decrement, factor, done, value, eta, grad)
        return new, {"loss": jnp.sum(state.value), "converged": jnp.all(done), "decrement": jnp.max(decrement)}


@dataclass(frozen=True)
class SubsampledNewton(Newton):
    """Newton steps with the full-data objective and gradient but the Hessian of a row
    subsample, for ``data = (full, subsample)``: O(N q + n q^2) a step, converging
    linearly at a rate set by how closely the subsample's Hessian matches the full one.
    The decrement, and so ``tol``, is measured in the subsample's Hessian."""

    def hessian(self, beta, data, eta):
        del eta  # the full data's
        sub = data[1]
        X, _, offset, _, _, _ = sub
        return super().hessian(beta, sub, predictor(X, beta, offset))

    def merit(self, beta, data):
        return super().merit(beta, data[0])


@functools.partial(jax.jit, static_argnums=0)
def _merit(newton: Newton, beta, data):
    return newton.merit(beta, data)


@dataclass(frozen=True)
class SummedObjective:
    """The objectives of all ``m`` problems as one function of their stacked free
    coefficients, for L-BFGS (the problems are separable, so its minimum is theirs)."""

    newton: Newton

    def __call__(self, z, data):
        free = data[4]
        return jnp.sum(self.newton.objective(z.reshape(free.shape) * free, data))


def _over_row_blocks(f, rows: int, *arrays):
    """``f(*blocks) -> (sums, per_row)`` over consecutive blocks of ``rows`` rows of ``arrays``:
    returns the ``sums`` (a pytree) added over the blocks, and the ``per_row`` outputs (a
    pytree of arrays with one leading entry per row of the block) put back together, (N, ...).

    The products that contract the long axis (``r^T X``, ``X^T diag(c) X``) are summed this
    way: each block's operands stay in cache, where one product over all N rows streams
    them (and an (N, q) temporary) through memory, several times slower on XLA:CPU."""
    N = arrays[0].shape[0]
    rows = min(N, rows)
    full = N // rows
    sums, tail = f(*(a[full * rows :] for a in arrays))
    per_row = jax.tree.map(lambda t: jnp.zeros((N, *t.shape[1:]), t.dtype).at[full * rows :].set(t), tail)

    def add_block(i, carry):
        total, out = carry
        block_sums, block_rows = f(*(jax.lax.dynamic_slice_in_dim(a, i * rows, rows) for a in arrays))
        out = jax.tree.map(lambda o, b: jax.lax.dynamic_update_slice_in_dim(o, b, i * rows, 0), out, block_rows)
        return jax.tree.map(jnp.add, total, block_sums), out

    return jax.lax.fori_loop(0, full, add_block, (sums, per_row))


def _transposed_product(r, X):
    """``r^T X`` (m, p) for ``r`` (N, m)."""
    return _over_row_blocks(lambda r, x: (r.T @ x, ()), _PRODUCT_BLOCK_ROWS, r, X)[0]


def _gram(X, c):
    """``sum_i c_ij z_i z_i^T`` (m, q, q) for each problem ``j`` with ``z_i = (1, x_i)``: the
    Hessian of the likelihood part, for curvatures ``c`` (N, m)."""

    def block(x, c):
        z = jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x], axis=1)
        # (n, q, m) x (n, q) -> (q, m, q): faster on XLA:CPU than the two-dimensional (c z)^T z
        return jax.lax.dot_general(z[:, :, None] * c[:, None, :], z, (((0,), (0,)), ((), ()))), ()

    return jnp.moveaxis(_over_row_blocks(block, _GRAM_BLOCK_ROWS, X, c)[0], 1, 0)


@jax.custom_vjp
def predictor(X, beta, offset):
    """``eta`` (N, m) for coefficients ``beta`` (m, q), intercept first."""
    return X @ beta[:, 1:].T + beta[:, 0] + offset[:, None]


def _predictor_forward(X, beta, offset):
    return predictor(X, beta, offset), X


def _predictor_backward(X, cotangent):
    # the gradient in beta as g^T X by blocks of rows: autodiff would form X^T g, several
    # times slower on XLA:CPU
    grad = jnp.concatenate([jnp.sum(cotangent, 0)[:, None], _transposed_product(cotangent, X)], axis=1)
    return None, grad, None


predictor.defvjp(_predictor_forward, _predictor_backward)


def fit_glm(
    model,
    *data,
    l2: float = 0.0,
    offset=None,
    weights=None,
    num_samples: int = 1000,
    rng_key=0,
    max_iter: int = 100,
    tol: float = 1e-10,
    method: str = "auto",
    progress: bool = True,
) -> Result:
    r"""Fit a GLM, an LNP or a population GLM by penalised maximum likelihood,
    with the Laplace posterior over the coefficients.

    The objective is :math:`-\sum_i w_i \log p(y_i \mid \eta_i) + \tfrac{l_2}{2}\|w\|^2`
    (the intercept is not penalised), that is the negative log posterior under the
    prior :math:`w \sim N(0, 1/l_2)`; ``l2=0`` is maximum likelihood. For the
    Gaussian family the log-likelihood has unit variance, so ``l2`` is ridge
    regression's ``alpha`` and the prior scales with the noise (the conjugate
    choice). scikit-learn's ``PoissonRegressor(alpha)`` is ``l2 = alpha * sum(weights)``.

    Newton's method with a Cholesky solve and a backtracking line search, stopped
    when half the Newton decrement (the predicted decrease of the objective) is below
    ``tol`` nats for every problem. The Laplace posterior is :math:`N(\hat\beta,
    \phi H^{-1})` with :math:`H` the Hessian at the optimum (the observed information;
    statsmodels' default standard errors use the expected one, which differs for
    non-canonical links) and :math:`\phi` the
    dispersion: 1, or for the Gaussian family the Pearson estimate
    :math:`\sum_i w_i (y_i - \hat\mu_i)^2 / (\sum_i w_i - q)`, as statsmodels reports it.

    Parameters
    ----------
    model : GLM, LNP or PopulationGLM
    *data
        ``X, y`` for a GLM; ``stimulus, spikes`` for the spike-train models.
    l2 : float
        Precision of the Gaussian prior on the weights (0: flat prior, maximum likelihood).
    offset : array (N,), optional
        Added to the linear predictor: the log exposure of a count model.
    weights : array (N,), optional
        Observation weights multiplying each log-likelihood term (frequency weights;
        weight 0 leaves a bin out).
    num_samples : int
        Laplace draws of the coefficients in ``res.draws``.
    method : {"auto", "newton", "lbfgs", "subsample"}
        How Newton's method is started. ``"newton"``: from the intercept-only fit.
        ``"lbfgs"`` first runs L-BFGS (gradients only, O(Np) a step) and then Newton's
        method from its solution, which typically needs one or two of its O(Np^2 + p^3)
        steps to meet ``tol`` and gives the Hessian of the Laplace posterior.
        ``"subsample"`` first fits a fixed random 1/16 of the rows (their weights times
        16) by Newton's method, then takes Newton steps with the full-data gradient and
        that subsample's Hessian (O(Np + Np^2/16) each); the full-data Newton steps
        that follow are typically two. The answer is the same whichever start is used:
        the full-data Newton steps decide convergence. ``"auto"`` uses ``"subsample"``
        from 50,000 rows when the subsample has at least 20 rows per coefficient
        (except for the Gaussian family, which Newton's method solves in one step),
        else ``"lbfgs"`` above 40 coefficients per problem, else ``"newton"``.

    Returns
    -------
    Result
        ``params`` (the model's named coefficients; ``"weights"`` and ``"intercept"``
        for a GLM), ``draws`` (``(1, num_samples, ...)``), ``trace["loss"]`` (the
        summed objective per Newton step), ``sample_stats["log_p"]``/``["log_q"]``
        for the Pareto k-hat check of the approximation (skipped, and the skip recorded
        in ``info["importance_ratios"]``, when evaluating every draw would cost more than
        2e9 multiply-adds), and ``info`` with the
        deviance, null deviance, pseudo-R² (``1 - deviance / null_deviance``), the
        log-likelihood, AIC, the dispersion, the standard errors and, for spike-train
        models, the time-rescaling test on the training data. ``res.summary()`` is
        the coefficient table.

    References
    ----------
    McCullagh & Nelder (1989), *Generalized Linear Models*; Boyd & Vandenberghe (2004), §9.5.
    """
    l2 = check_positive_float("l2", l2, allow_zero=True)
    num_samples = check_positive_int("num_samples", num_samples)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_float("tol", tol)
    check_choice("method", method, ("auto", "newton", "lbfgs", "subsample"))
    if not hasattr(model, "linear_problem"):
        raise TypeError(f"model must be a GLM, LNP or PopulationGLM, got {type(model).__name__}")
    problem = model.linear_problem(*data, offset=offset, weights=weights)
    family = problem.family
    m, q = problem.free.shape
    if method == "auto":
        method = _automatic_method(family, problem.X.shape[0], q)
    host = _padded(problem, l2)
    arrays = jax.device_put(host)  # asynchronous: the design is copied while the start is computed
    null_intercept = _intercept_only(problem)
    beta0 = np.zeros((m, arrays[4].shape[1]))
    beta0[:, 0] = null_intercept
    solver = Newton(family, tol)
    if method == "lbfgs":
        beta0 = _lbfgs_start(solver, beta0, arrays, max_iter, progress)
    elif method == "subsample":
        beta0 = _subsample_start(family, beta0, host, arrays, max_iter, progress)
    out = run(
        solver, solver.init(jnp.asarray(beta0), arrays), data=arrays, max_iter=max_iter, objective="loss",
        monitor=reported("converged"), progress=progress, desc="fit_glm",
    )  # fmt: skip
    state = out.state
    factor = np.asarray(state.factor)[:, :q, :q]
    if bool(out.failed) or not np.all(np.isfinite(factor)):
        raise ConvergenceError(
            "fit_glm: the Hessian is singular, so the coefficients are not identified: the design has "
            "collinear or constant columns, or (Bernoulli) the outcomes are perfectly separated; pass l2 > 0"
        )
    beta = np.asarray(state.beta)[:, :q]
    num_free = problem.free.sum(axis=1)
    value, null_value, saturated, squares = (
        np.asarray(v) for v in _fit_summary(solver, state.beta, jnp.asarray(null_intercept), arrays)
    )
    loglik = -(value - 0.5 * l2 * np.sum(beta[:, 1:] ** 2, axis=1))
    deviance = 2 * (saturated - loglik)
    null_deviance = 2 * (saturated + null_value)
    total_weight = float(problem.weights.sum())
    dispersion = np.ones(m)
    if family.family == "gaussian":
        if np.any(total_weight <= num_free):
            raise ValueError(f"the Gaussian dispersion needs more observations ({total_weight:g}) than "
                             f"coefficients ({int(num_free.max())})")  # fmt: skip
        dispersion = squares / (total_weight - num_free)
        # the log-likelihood at the maximum-likelihood variance, as statsmodels reports it
        loglik = -0.5 * total_weight * (np.log(2 * np.pi * deviance / total_weight) + 1)

    draws, log_q = _laplace_draws(as_key(rng_key), beta, factor, problem.free, dispersion, num_samples)
    per_problem = np.array(state.done)
    standard_errors = model.unpack(_standard_errors(factor, dispersion, problem.free), derived=False)
    info = {
        "n_iter": int(out.n_iter),
        "solver": method,
        "l2": l2,
        "family": family.family,
        "link": family.link,
        "num_observations": total_weight,
        "num_coefficients": int(num_free.sum()),
        "log_likelihood": _scalar_or_list(loglik),
        "deviance": _scalar_or_list(deviance),
        "null_deviance": _scalar_or_list(null_deviance),
        "pseudo_r2": _scalar_or_list(1 - deviance / null_deviance),
        "aic": float(np.sum(2 * num_free - 2 * loglik)),
        "dispersion": _scalar_or_list(dispersion),
        "newton_decrement": _scalar_or_list(np.asarray(state.decrement)),
        "converged_per_problem": per_problem.tolist(),
        "standard_errors": {k: np.asarray(v).tolist() for k, v in standard_errors.items()},
        "warnings": [],
    }
    if family.family == "bernoulli" and _separated(solver, state.beta, arrays):
        per_problem[:] = False
        message = ("the outcomes are perfectly separated: every fitted probability is within 1e-8 of its outcome, "
                   "so the maximum-likelihood coefficients are infinite; pass l2 > 0 for a finite MAP")  # fmt: skip
        info["warnings"].append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    if not per_problem.all():
        info["warnings"].append(
            f"{int((~per_problem).sum())} of {m} problems did not converge in {max_iter} Newton steps"
        )
    log_p = _log_posterior_of_draws(solver, draws, arrays, dispersion, info)
    result = Result(
        method="fit_glm",
        model=model,
        params={k: np.asarray(v) for k, v in model.unpack(beta).items()},
        draws={k: np.asarray(v)[None] for k, v in model.unpack(draws).items()},
        trace={"loss": out.trace["loss"]},
        converged=bool(per_problem.all()),
        info=info,
        sample_stats={} if log_p is None else {"log_p": log_p[None], "log_q": log_q[None]},
        observed_data={"y": problem.y[:, 0] if m == 1 else problem.y},
    )
    if isinstance(model, LNP | PopulationGLM):
        test = time_rescaling_test(result, *data, rng_key=rng_key)
        info["time_rescaling"] = {
            "ks_statistic": test.ks_statistic,
            "p_value": test.p_value,
            "per_neuron": [dict(row._asdict()) for row in test.per_neuron],
        }
    return result


def _automatic_method(family, N: int, q: int) -> str:
    """``method="auto"``: the subsample start where it has enough rows per coefficient
    (except for the Gaussian family, whose quadratic objective Newton solves in one step
    from any start), else L-BFGS for many coefficients."""
    enough_rows = N >= SUBSAMPLE_MIN_ROWS and N // SUBSAMPLE_FRACTION >= SUBSAMPLE_ROWS_PER_COEFFICIENT * q
    if enough_rows and family.family != "gaussian":
        return "subsample"
    return "lbfgs" if q > LBFGS_MIN_COEFFICIENTS else "newton"


def _lbfgs_start(newton: Newton, beta0, arrays, max_iter: int, progress: bool) -> np.ndarray:
    """Coefficients from L-BFGS on the summed objective, to a relative change of 1e-9:
    gradients only, so each step costs O(N p) where a Newton step costs O(N p^2 + p^3).
    Newton's method then polishes them (typically in one or two steps) and gives the
    Hessian that the Laplace posterior needs."""
    lbfgs = LBFGS(SummedObjective(newton), gtol=0.0, ftol=1e-9)
    z0 = jnp.asarray(beta0).ravel()
    out = run(lbfgs, lbfgs.init(z0, arrays), data=arrays, max_iter=10 * max_iter, objective="loss",
              monitor=reported("done"), progress=progress, desc="fit_glm (L-BFGS)")  # fmt: skip
    beta = np.asarray(out.state.z).reshape(beta0.shape) * np.asarray(arrays[4])
    return beta if np.all(np.isfinite(beta)) else beta0


def _subsample_start(family, beta0, host, arrays, max_iter: int, progress: bool) -> np.ndarray:
    """Coefficients near the optimum from O(N q) full-data passes: Newton's method on a fixed
    random 1 / ``SUBSAMPLE_FRACTION`` of the rows (weights scaled up to match), then Newton
    steps with the full-data gradient and that subsample's Hessian. The full-data Newton
    steps (O(N q^2) each) that follow are then typically two, and they alone decide
    convergence. Problems whose subsample fit fails start the second stage from ``beta0``."""
    X, y, offset, weights, free, l2 = host
    N, k = X.shape[0], SUBSAMPLE_FRACTION
    rows = np.sort(np.random.default_rng(0).choice(N, max(1, N // k), replace=False))
    sub = jax.device_put((X[rows], y[rows], offset[rows], k * weights[rows], free, l2))
    newton = Newton(family, _SUBSAMPLE_TOL)
    out = run(newton, newton.init(jnp.asarray(beta0), sub), data=sub, max_iter=max_iter, objective="loss",
              monitor=reported("converged"), progress=progress, desc="fit_glm (subsample)")  # fmt: skip
    beta = np.asarray(out.state.beta)
    fitted = (0.5 * np.asarray(out.state.decrement) <= newton.tol) & np.all(np.isfinite(beta), axis=1)
    beta = np.where(fitted[:, None], beta, beta0)
    subsampled = SubsampledNewton(family, _SUBSAMPLE_TOL)
    out = run(subsampled, subsampled.init(jnp.asarray(beta), (arrays, sub)), data=(arrays, sub),
              max_iter=min(max_iter, _SUBSAMPLED_NEWTON_MAX_ITER), objective="loss",
              monitor=reported("converged"), progress=progress, desc="fit_glm (subsampled Hessian)")  # fmt: skip
    return np.asarray(out.state.beta)


def _separated(solver: Newton, beta, data) -> bool:
    X, y, offset, weights, _, l2 = data
    if float(l2) > 0:
        return False
    mean = solver.family.mean(predictor(X, beta, offset))
    return bool(jnp.all(jnp.where(weights[:, None] > 0, jnp.abs(mean - y) < 1e-8, True)))


def _bucket(n: int) -> int:
    """The smallest of 2^k * (1, 1.25, 1.5, 1.75) at least ``n``: few distinct shapes, <= 25% padding."""
    if n <= 8:
        return 8
    power = 1 << (n.bit_length() - 3)
    return -(-n // power) * power


def _padded(problem: LinearProblem, l2: float):
    """The problem's arrays (on the host) with N and the coefficient count padded to buckets, so fits of
    similar sizes share one compiled program: padded rows have weight 0 and padded
    coefficients are held at 0, so neither changes the answer. A design above
    ``_PAD_MAX_ELEMENTS`` is not copied: there compilation is a small share of the fit."""
    N, p = problem.X.shape
    if problem.X.size > _PAD_MAX_ELEMENTS:
        n_pad, q_pad = N, p + 1
    else:
        n_pad, q_pad = _bucket(N), -(-(p + 1) // 8) * 8
    X = problem.X
    if X.shape != (n_pad, q_pad - 1):
        X = np.zeros((n_pad, q_pad - 1))
        X[:N, :p] = problem.X
    y = np.zeros((n_pad, problem.y.shape[1]))
    y[:N] = problem.y
    offset, weights = np.zeros(n_pad), np.zeros(n_pad)
    offset[:N], weights[:N] = problem.offset, problem.weights
    free = np.zeros((problem.free.shape[0], q_pad), bool)
    free[:, : p + 1] = problem.free
    return X, y, offset, weights, free, np.asarray(l2)


def _intercept_only(problem: LinearProblem) -> np.ndarray:
    """The maximum-likelihood intercept of each problem without covariates (the start,
    and the null deviance's model). With a constant offset the fitted mean is the
    weighted mean response for every family here; a Poisson log link has a closed form
    for any offset; otherwise a one-dimensional Newton iteration."""
    family, w, offset = problem.family, problem.weights, problem.offset
    mean_y = w @ problem.y / w.sum()
    if family.family != "gaussian" and np.any(mean_y <= 0):
        raise ValueError(f"every response is 0 in problem(s) {np.nonzero(mean_y <= 0)[0].tolist()}: the "
                         "maximum-likelihood intercept is -inf")  # fmt: skip
    if family.family == "bernoulli" and np.any(mean_y >= 1):
        raise ValueError(f"every response is 1 in problem(s) {np.nonzero(mean_y >= 1)[0].tolist()}: the "
                         "maximum-likelihood intercept is +inf")  # fmt: skip
    if np.ptp(offset) == 0:
        return family.link_function(mean_y) - offset[0]
    if family.link == "log" and family.family == "poisson":
        return np.log(w @ problem.y) - np.log(w @ np.exp(offset))
    start = family.link_function(mean_y) - np.average(offset, weights=w)
    return np.asarray(_intercept_newton(family, jnp.asarray(start), *map(jnp.asarray, (problem.y, offset, w))))


@functools.partial(jax.jit, static_argnums=0)
def _intercept_newton(family, b, y, offset, weights):
    def negloglik(b):
        return -weights @ family.log_likelihood(b + offset[:, None], y)

    def newton(b, _):
        total = lambda b: jnp.sum(negloglik(b))  # noqa: E731  (the problems are independent)
        g = jax.grad(total)(b)
        h = jax.jvp(jax.grad(total), (b,), (jnp.ones_like(b),))[1]
        step = g / jnp.where(h > 0, h, jnp.inf)
        # convex in one variable: halve the step until the objective does not increase
        step = jax.lax.fori_loop(0, 30, lambda _, s: jnp.where(negloglik(b - s) <= negloglik(b), s, 0.5 * s), step)
        return b - step, None

    return jax.lax.scan(newton, b, None, length=50)[0]


@functools.partial(jax.jit, static_argnums=0)
def _fit_summary(solver, beta, null_intercept, data):
    """Objective at ``beta``, intercept-only negative log-likelihood, saturated
    log-likelihood and the weighted residual sum of squares, per problem."""
    X, y, offset, weights, _, _ = data
    family = solver.family
    null = -weights @ family.log_likelihood(null_intercept + offset[:, None], y)
    saturated = weights @ family.saturated_log_likelihood(y)
    squares = weights @ (y - family.mean(predictor(X, beta, offset))) ** 2
    return solver.objective(beta, data), null, saturated, squares


def _standard_errors(factor, dispersion, free) -> np.ndarray:
    inverse = np.linalg.inv(factor)  # L^-1; the covariance is L^-T L^-1
    variance = np.einsum("mij,mij->mj", inverse, inverse)
    return np.sqrt(variance * dispersion[:, None]) * free


def _laplace_draws(key, beta, factor, free, dispersion, num_samples):
    """``beta + sqrt(phi) L^-T z``, with the log density of each draw under that Gaussian."""
    m, q = beta.shape
    z = np.asarray(jax.random.normal(key, (num_samples, m, q), dtype=beta.dtype)) * free
    scale = np.sqrt(dispersion)[:, None]
    offsets = np.stack([np.linalg.solve(factor[j].T, z[:, j].T).T for j in range(m)], axis=1)
    draws = beta + scale[None] * offsets
    k = free.sum(axis=1)
    log_det = np.sum(np.log(np.diagonal(factor, axis1=1, axis2=2)) * free, axis=1) - 0.5 * k * np.log(dispersion)
    log_q = np.sum(-0.5 * np.sum(z**2, axis=2) + log_det - 0.5 * k * math.log(2 * math.pi), axis=1)
    return draws, log_q


def _log_posterior_of_draws(solver: Newton, draws, arrays, dispersion, info):
    """The unnormalised log posterior of each draw (for Pareto k-hat), within a compute budget."""
    X, free = arrays[0], arrays[4]
    num_samples, m, q = draws.shape
    cost = X.shape[0] * num_samples * q * m
    if cost > _IMPORTANCE_BUDGET:
        info["importance_ratios"] = (
            f"not computed: evaluating every draw costs {cost:.2g} multiply-adds "
            f"(N x num_samples x coefficients), above the budget of {_IMPORTANCE_BUDGET:.0e}"
        )
        return None
    chunk = max(1, min(num_samples, _DRAW_CHUNK_ELEMENTS // max(1, X.shape[0] * m)))
    padded = np.zeros((num_samples + (-num_samples % chunk), m, free.shape[1]))
    padded[:num_samples, :, :q] = draws
    batches = jnp.asarray(padded.reshape(-1, chunk, m, free.shape[1]))
    values = _objective_of_batches(solver, batches, arrays)
    info["importance_ratios"] = "computed"
    return -np.asarray(values).reshape(-1, m)[:num_samples] @ (1.0 / dispersion)


@functools.partial(jax.jit, static_argnums=0)
def _objective_of_batches(solver, batches, arrays):
    return jax.lax.map(lambda batch: jax.vmap(lambda b: solver.objective(b, arrays))(batch), batches)


def _scalar_or_list(values):
    values = np.asarray(values, float)
    return float(values[0]) if values.size == 1 else values.tolist()
