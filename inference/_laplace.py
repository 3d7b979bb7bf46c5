"""Laplace approximation of a NumPyro program in its unconstrained space."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bayeskit.models._keys import as_key
from bayeskit.models._numerics import robust_cholesky

from ._errors import ConvergenceError
from ._optimize import GTOL, lbfgs
from ._program import as_seed, bind, detect_backend, posterior_groups
from ._result import Result
from ._validation import check_positive_int

_NEWTON_STEPS = 3


def laplace(
    model,
    *args,
    num_samples: int = 1000,
    rng_key=0,
    max_iter: int = 1000,
    backend=None,
    progress: bool = True,
    **kwargs,
) -> Result:
    """Gaussian approximation at the mode of the unconstrained posterior density.

    With :math:`z` NumPyro's unconstrained parameters and :math:`U(z) = -\\log p(y,
    T(z)) - \\log|J_T(z)|` the potential (Jacobian included, as NumPyro's
    ``AutoLaplaceApproximation``), the approximation is :math:`q(z) = N(\\hat z,
    H^{-1})` with :math:`\\hat z = \\arg\\min U` and :math:`H = \\nabla^2 U(\\hat z)`
    (Laplace 1774; Tierney & Kadane 1986). The mode is found by L-BFGS and polished
    with up to three Newton steps, so quadratic potentials are solved to rounding.

    If ``H`` is not positive definite the mode is a saddle or lies on a flat ridge:
    jitter is added to its diagonal until it factorises (``info["jitter"]``,
    ``info["hessian_positive_definite"] = False`` and a warning), so the draws use
    ``(H + jitter I)^{-1}``. Draws come with ``sample_stats["log_p"] = -U(z)`` and
    ``["log_q"] = log q(z)``, from which ``diagnose`` computes Pareto k-hat.

    Returns a Result with ``params`` (the mode mapped to the constrained space),
    ``draws`` ``(1, num_samples, ...)`` of every latent and deterministic site,
    ``log_likelihood``, ``trace["loss"]`` (the potential per L-BFGS iteration) and
    ``info`` with ``n_iter``, ``jitter``, ``hessian_positive_definite``,
    ``log_density_at_mode``.

    A Pyro program (detected, or ``backend="pyro"``) goes through the same maths on
    Pyro's potential, with torch's L-BFGS and Hessian; ``rng_key`` is then an ``int``
    seed (:mod:`._pyro_door`).

    Example
    -------
    >>> res = laplace(model, X, y=y, num_samples=2000)    # doctest: +SKIP
    >>> diagnose(res)                                      # doctest: +SKIP
    """
    num_samples = check_positive_int("num_samples", num_samples)
    max_iter = check_positive_int("max_iter", max_iter)
    if detect_backend(model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        return _pyro_door.laplace(
            model, args, kwargs, num_samples=num_samples, seed=as_seed(rng_key), max_iter=max_iter, progress=progress
        )
    init_key, draw_key = jax.random.split(as_key(rng_key))
    program = bind(model, args, kwargs, rng_key=init_key, routine="laplace")
    found = lbfgs(program.potential, program.init_position, max_iter=max_iter, progress=progress, desc="laplace")
    mode, hessian, newton_steps = _newton_polish(program.potential, found.x)
    potential_at_mode = float(program.potential(mode))
    grad_norm = float(jnp.linalg.norm(jax.grad(program.potential)(mode)))
    if not np.isfinite(potential_at_mode):
        raise ConvergenceError(
            f"laplace: the log density is not finite at the mode found by L-BFGS after {found.n_iter} iterations"
        )
    factor, jitter = robust_cholesky(hessian)
    if not bool(jnp.all(jnp.isfinite(factor))):
        raise ConvergenceError(
            "laplace: the Hessian at the mode is not positive definite even after adding "
            f"jitter {float(jitter):.3g} to its diagonal"
        )
    eps = jax.random.normal(draw_key, (num_samples, program.dim), dtype=mode.dtype)
    # z = mode + L^{-T} eps has covariance (L L^T)^{-1} = H^{-1}
    positions = mode + jax.scipy.linalg.solve_triangular(factor.T, eps.T, lower=False).T
    log_q = (
        -0.5 * program.dim * math.log(2 * math.pi) + jnp.sum(jnp.log(jnp.diag(factor))) - 0.5 * jnp.sum(eps**2, axis=-1)
    )
    log_p = -jax.vmap(program.potential)(positions)

    return laplace_result(
        model,
        {k: np.asarray(v) for k, v in program.constrain(mode).items()},
        found,
        newton_steps=newton_steps,
        grad_norm=grad_norm,
        jitter=float(jitter),
        potential_at_mode=potential_at_mode,
        latent_sites=list(program.latent_shapes),
        log_ratio=(np.asarray(log_p), np.asarray(log_q)),
        groups=posterior_groups(program, program.constrain_batch(positions), num_chains=1),
    )


def laplace_result(
    model, params, found, *, newton_steps, grad_norm, jitter, potential_at_mode, latent_sites, log_ratio, groups
) -> Result:
    """The Result of a Laplace approximation, shared by both backends; ``log_ratio`` is
    ``(log p, log q)`` of the draws."""
    converged = grad_norm < GTOL * max(1.0, abs(potential_at_mode))
    info = {
        "n_iter": found.n_iter,
        "newton_steps": newton_steps,
        "grad_norm": grad_norm,
        "jitter": jitter,
        "hessian_positive_definite": jitter == 0.0,
        "log_density_at_mode": -potential_at_mode,
        "latent_sites": latent_sites,
        "warnings": [],
    }
    if jitter > 0:
        info["warnings"].append(
            f"the Hessian at the mode is not positive definite; jitter {jitter:.3g} "
            "was added to its diagonal, so the covariance is (H + jitter I)^-1"
        )
    if not converged:
        info["warnings"].append(f"the gradient norm at the returned mode is {grad_norm:.3g}")
    log_p, log_q = log_ratio
    return Result(
        method="laplace",
        model=model,
        params=params,
        trace={"loss": found.trace},
        converged=bool(converged),
        info=info,
        sample_stats={"log_p": log_p[None], "log_q": log_q[None]},
        **groups,
    )


def _newton_polish(potential, mode):
    """A few Newton steps from the L-BFGS answer, kept only while they lower U.

    L-BFGS stops at a gradient tolerance; Newton's quadratic convergence takes the
    mode the rest of the way when the Hessian is positive definite there.
    """
    hessian_fn, grad_fn = jax.jit(jax.hessian(potential)), jax.jit(jax.grad(potential))
    hessian = hessian_fn(mode)
    taken = 0
    for _ in range(_NEWTON_STEPS):
        factor = jnp.linalg.cholesky(hessian)  # NaN unless positive definite: then stop
        if not bool(jnp.all(jnp.isfinite(factor))):
            break
        step = jax.scipy.linalg.cho_solve((factor, True), grad_fn(mode))
        candidate = mode - step
        if not potential(candidate) <= potential(mode):
            break
        mode, hessian, taken = candidate, hessian_fn(candidate), taken + 1
        if float(jnp.max(jnp.abs(step))) < 1e-12:
            break
    return mode, hessian, taken
