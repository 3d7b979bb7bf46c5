"""Stochastic variational inference for NumPyro programs.

The built-in families (``normal``, ``mvn``, ``lowrank``) are Gaussians over the flat
unconstrained vector of :mod:`._program`, fitted by our own ``(init, step)`` pair
with the analytic entropy; ``delta`` is a point mass (SVI to the MAP); a guide
callable goes through NumPyro's ``SVI`` with ``Trace_ELBO``. All of them share the
step-size rule and iterate averaging below, which is what makes the answer the
optimum of the family rather than a point bouncing around it.

Step sizes (Robbins & Monro 1951; Polyak & Juditsky 1992): ``learning_rate`` is held
for the first half of ``num_steps`` and then decays as
``learning_rate * (1 + (t - T/2) / (T/20)) ** -0.6``, and the returned parameters are
the average of the iterates over the second half. A constant step leaves the
iterate spread around the optimum at a distance set by the gradient noise (the
noise floor); the decaying step and the average remove it.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from numpyro import handlers
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.util import log_density
from numpyro.optim import optax_to_numpyro

from bayeskit.models._keys import as_key

from . import _driver
from ._checks import plateaued
from ._errors import ConvergenceError
from ._optimize import lbfgs
from ._program import Program, as_seed, bind, detect_backend, posterior_groups
from ._result import Result
from ._validation import check_choice, check_positive_float, check_positive_int

GUIDES = ("normal", "mvn", "lowrank", "delta")
_INIT_SCALE = 0.1
_DECAY_POWER = 0.6


class _Family(NamedTuple):
    init: Callable[[jax.Array, int], dict]  # (loc, rank) -> raw parameters
    distribution: Callable[[dict], dist.Distribution]


def _softplus_inverse(x):
    return jnp.log(jnp.expm1(x))


def _tril(raw):
    return jnp.tril(raw, -1) + jnp.diag(jax.nn.softplus(jnp.diag(raw)))


_FAMILIES = {
    "normal": _Family(
        lambda loc, rank: {"loc": loc, "raw_scale": jnp.full_like(loc, _softplus_inverse(_INIT_SCALE))},
        lambda p: dist.Normal(p["loc"], jax.nn.softplus(p["raw_scale"])).to_event(1),
    ),
    "mvn": _Family(
        lambda loc, rank: {
            "loc": loc,
            "raw_tril": jnp.eye(loc.size) * _softplus_inverse(_INIT_SCALE),
        },
        lambda p: dist.MultivariateNormal(p["loc"], scale_tril=_tril(p["raw_tril"])),
    ),
    "lowrank": _Family(
        lambda loc, rank: {
            "loc": loc,
            # small distinct columns: identical ones would get identical gradients
            "cov_factor": 1e-2 * jax.random.normal(jax.random.PRNGKey(0), (loc.size, rank), loc.dtype),
            "raw_diag": jnp.full_like(loc, _softplus_inverse(_INIT_SCALE)),
        },
        lambda p: dist.LowRankMultivariateNormal(p["loc"], p["cov_factor"], jax.nn.softplus(p["raw_diag"]) ** 2),
    ),
}


def default_schedule(learning_rate: float, num_steps: int) -> optax.Schedule:
    """Hold ``learning_rate`` for half the run, then decay it (Robbins–Monro)."""
    hold, tau = num_steps // 2, max(num_steps / 20, 1.0)

    def schedule(t):
        decay = (1.0 + jnp.maximum(t - hold, 0) / tau) ** -_DECAY_POWER
        return learning_rate * decay

    return schedule


def svi(
    model,
    *args,
    guide="normal",
    num_steps: int = 5000,
    learning_rate: float = 1e-2,
    num_samples: int = 1000,
    num_particles: int = 1,
    optimizer: optax.GradientTransformation | None = None,
    rank: int | None = None,
    rng_key=0,
    backend=None,
    progress: bool = True,
    **kwargs,
) -> Result:
    """Fit a variational family to the posterior of ``model(*args, **kwargs)``.

    Maximises the ELBO :math:`E_q[\\log p(y, z)] + H[q]` (Jordan et al. 1999;
    Kucukelbir et al. 2017 for the unconstrained Gaussian families) with
    reparameterised gradients averaged over ``num_particles`` draws.

    Parameters
    ----------
    guide : {"normal", "mvn", "lowrank", "delta"} or callable
        Diagonal, full-rank or low-rank-plus-diagonal Gaussian over the unconstrained
        latent vector; a point mass (the MAP, fitted by SGD); or a guide program
        (NumPyro or Pyro, as the model) taking the model's arguments.
    num_steps : int
        Optimisation steps, all of them taken.
    learning_rate : float
        First step size of the default schedule (module docstring).
    optimizer : optax.GradientTransformation, optional
        Replaces the default ``optax.adam(schedule)`` (``learning_rate`` is then not
        used); iterate averaging over the second half still applies. For a Pyro
        program, a callable ``params -> torch.optim.Optimizer`` instead.
    rank : int, optional
        Rank of the ``lowrank`` family (only); default ``ceil(sqrt(dim))``.

    The Gaussian families start with their mean at the mode of the unconstrained
    density (found by L-BFGS) and scale 0.1: starting far from it, Adam's second
    moment remembers the early huge gradients and the scales then crawl.

    Returns a Result with ``draws`` ``(1, num_samples, ...)`` (none for ``delta``),
    ``params`` (the family's mean mapped to the constrained space, the point for
    ``delta``, and the mean of the draws for a guide program), ``trace["elbo"]`` per
    step, ``sample_stats["log_p"]``/``["log_q"]`` for Pareto k-hat, and
    ``info["guide_params"]`` (the fitted raw parameters).
    ``converged`` is True when the ELBO has plateaued: the mean of its last tenth
    differs from the tenth before by less than three standard errors.

    A Pyro program (detected, or ``backend="pyro"``) is fitted the same way with
    Pyro's autoguides (``AutoDiagonalNormal``, ``AutoMultivariateNormal``,
    ``AutoLowRankMultivariateNormal``, ``AutoDelta``) and ``Trace_ELBO``, by torch's
    Adam under the same schedule; ``rng_key`` is then an ``int`` seed
    (:mod:`._pyro_door`).
    """
    num_steps = check_positive_int("num_steps", num_steps)
    num_samples = check_positive_int("num_samples", num_samples)
    num_particles = check_positive_int("num_particles", num_particles)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    if isinstance(guide, str):
        check_choice("guide", guide, GUIDES)
    elif not callable(guide):
        raise TypeError(f"guide must be one of {GUIDES} or a callable, got {type(guide).__name__}")
    if rank is not None and guide != "lowrank":
        raise ValueError(f"rank applies to guide='lowrank' only; got rank={rank} with guide={guide!r}")
    if guide == "delta" and num_particles != 1:
        raise ValueError(f"a delta guide has nothing to average over particles; got num_particles={num_particles}")
    if detect_backend(model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        return _pyro_door.svi(
            model,
            args,
            kwargs,
            guide=guide,
            num_steps=num_steps,
            learning_rate=learning_rate,
            num_samples=num_samples,
            num_particles=num_particles,
            optimizer=optimizer,
            rank=None if rank is None else check_positive_int("rank", rank),
            seed=as_seed(rng_key),
            progress=progress,
        )
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {optimizer!r}")
    optimizer = optimizer or optax.adam(default_schedule(learning_rate, num_steps))

    init_key, fit_key, draw_key = jax.random.split(as_key(rng_key), 3)
    program = bind(model, args, kwargs, rng_key=init_key, routine="svi")
    options = dict(num_steps=num_steps, optimizer=optimizer, progress=progress)
    if callable(guide):
        return _fit_guide_program(program, guide, fit_key, draw_key, num_particles, num_samples, **options)
    if guide == "delta":
        return _fit_delta(program, fit_key, **options)
    rank = check_positive_int("rank", rank) if rank is not None else int(np.ceil(np.sqrt(program.dim)))
    return _fit_gaussian(program, guide, rank, fit_key, draw_key, num_particles, num_samples, **options)


class _State(NamedTuple):
    params: dict
    opt_state: optax.OptState
    average: dict
    key: jax.Array
    t: jax.Array


def _fit(loss_fn, params, key, *, num_steps, optimizer, progress, desc):
    """Run ``loss_fn(params, key)`` through the optimiser with tail averaging."""
    start = num_steps // 2

    def step(state: _State, _data):
        key, sub = jax.random.split(state.key)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, sub)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        weight = jnp.where(state.t >= start, 1.0 / jnp.maximum(state.t - start + 1, 1), 0.0)
        average = jax.tree.map(lambda a, p: a + weight * (p - a), state.average, params)
        return _State(params, opt_state, average, key, state.t + 1), {"elbo": -loss}

    state = _State(params, optimizer.init(params), params, key, jnp.asarray(0))
    out = _driver.run(step, state, max_iter=num_steps, objective="elbo", progress=progress, desc=desc)
    if out.failed:
        raise ConvergenceError(
            f"svi: the ELBO became non-finite at step {int(out.n_iter)}; lower learning_rate or check the model"
        )
    return out.state.average, out.trace["elbo"]


def _mode(program: Program) -> jax.Array:
    """Where the Gaussian families start: the mode if L-BFGS finds one (a funnel such
    as centred eight schools has none), else NumPyro's initial point."""
    found = lbfgs(program.potential, program.init_position, max_iter=500, progress=False)
    return found.x if found.converged else program.init_position


def _fit_gaussian(program, guide, rank, fit_key, draw_key, num_particles, num_samples, **options):
    family = _FAMILIES[guide]
    params = family.init(_mode(program), rank)
    potential = jax.vmap(program.potential)

    def loss_fn(params, key):
        q = family.distribution(params)
        z = q.rsample(key, (num_particles,))
        return jnp.mean(potential(z)) - q.entropy()

    params, elbo = _fit(loss_fn, params, fit_key, desc=f"svi ({guide})", **options)
    q = family.distribution(params)
    positions = q.sample(draw_key, (num_samples,))
    point = program.constrain(params["loc"])
    draws = (program.constrain_batch(positions), -potential(positions), q.log_prob(positions))
    return _result(program, guide, params, point, elbo, num_particles, draws)


def _fit_delta(program, fit_key, **options):
    def loss_fn(params, key):
        return program.neg_log_joint(params["loc"])

    params, elbo = _fit(loss_fn, {"loc": program.init_position}, fit_key, desc="svi (delta)", **options)
    return _result(program, "delta", params, program.constrain(params["loc"]), elbo, 1)


def _fit_guide_program(program, guide, fit_key, draw_key, num_particles, num_samples, **options):
    model, args, kwargs = program.model, program.args, program.kwargs
    engine = SVI(model, guide, optax_to_numpyro(options["optimizer"]), Trace_ELBO(num_particles))
    init_key, run_key = jax.random.split(fit_key)
    try:
        svi_state = engine.init(init_key, *args, **kwargs)
    except Exception as exc:
        raise ValueError(f"svi: the guide raised {type(exc).__name__}: {exc}") from exc
    raw = engine.optim.get_params(svi_state.optim_state)
    guide_trace = handlers.trace(handlers.seed(handlers.substitute(guide, data=engine.constrain_fn(raw)), init_key))
    sampled = {name for name, site in guide_trace.get_trace(*args, **kwargs).items() if site["type"] == "sample"}
    missing = sorted(set(program.latent_shapes) - sampled)
    if missing:
        raise ValueError(f"svi: the guide must sample every latent site of the model; it leaves out {missing}")

    def loss_fn(raw_params, key):
        return engine.loss.loss(key, engine.constrain_fn(raw_params), model, guide, *args, **kwargs)

    raw, elbo = _fit(loss_fn, raw, run_key, desc="svi (guide)", **options)
    params = engine.constrain_fn(raw)
    sample_key, det_key = jax.random.split(draw_key)
    guide_draws = Predictive(guide, params=params, num_samples=num_samples)(sample_key, *args, **kwargs)
    latents = {k: guide_draws[k] for k in program.latent_shapes}
    log_q = jax.vmap(lambda s: log_density(guide, args, kwargs, {**params, **s})[0])(guide_draws)
    log_p = jax.vmap(lambda s: log_density(model, args, kwargs, s)[0])(latents)
    flat = dict(latents)
    if program.deterministic_names:
        names = list(program.deterministic_names)
        flat.update(Predictive(model, posterior_samples=latents, return_sites=names)(det_key, *args, **kwargs))
    # a guide program has no mode to report: its point estimate is the mean under q
    point = {k: np.mean(np.asarray(v), axis=0) for k, v in flat.items()}
    return _result(program, "custom", params, point, elbo, num_particles, (flat, log_p, log_q))


def _result(program, guide, params, point, elbo, num_particles, draws=None) -> Result:
    """``draws`` is (constrained draws, log p, log q), all one row per draw, or None."""
    groups = {"observed_data": dict(program.observed)}
    if draws is not None:
        flat, log_p, log_q = draws
        flat = {k: np.asarray(v) for k, v in flat.items()}
        groups = posterior_groups(program, flat, num_chains=1)
        groups["sample_stats"] = {"log_p": np.asarray(log_p)[None], "log_q": np.asarray(log_q)[None]}
    return Result(
        method="svi",
        model=program.model,
        params={k: np.asarray(v) for k, v in point.items()},
        trace={"elbo": elbo},
        converged=plateaued(elbo)[0],
        info=_info(program, guide, params, elbo, num_particles),
        **groups,
    )


def _info(program, guide, params, elbo, num_particles) -> dict:
    return {
        "guide": guide,
        "n_iter": int(len(elbo)),
        "num_particles": num_particles,
        "final_elbo": float(np.mean(elbo[-max(len(elbo) // 10, 1) :])),
        "latent_sites": list(program.latent_shapes),
        "guide_params": {k: np.asarray(v).tolist() for k, v in params.items()},
    }
