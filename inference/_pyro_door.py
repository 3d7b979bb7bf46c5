"""The Pyro door: Pyro programs through the generic routines (DESIGN, principle 7).

One function per routine, called by :func:`map_estimate`, :func:`laplace`,
:func:`svi`, :func:`nuts`, :func:`predictive` and :func:`prior_predictive` when
``detect_backend`` says ``"pyro"``. Each follows its NumPyro twin's maths and
returns the same ``Result`` (same method, keys and groups), with Pyro's own
machinery underneath: ``initialize_model`` for the unconstrained potential and
bijections (:mod:`._pyro_program`), autoguides and ``Trace_ELBO`` for SVI, Pyro's
``NUTS``/``MCMC`` for sampling, and conditioned traces for predictive draws.

Every call runs inside :func:`._pyro_program.isolated`: torch's RNG is forked and
seeded with the ``int`` ``rng_key``, and Pyro's parameter store is an empty scope
of our own, so the user's RNG stream and parameter store are as they were
afterwards. The model's own ``pyro.param`` sites (a ``PyroModule``'s parameters)
are held at their current values; they are not fitted.
"""

import math

import numpy as np
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, Trace_ELBO, autoguide
from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value
from pyro.poutine.util import site_is_subsample

from . import _driver
from ._checks import plateaued
from ._errors import ConvergenceError
from ._laplace import laplace_result
from ._map import map_result
from ._nuts import nuts_result
from ._program import BAD_INIT_VALUES, check_init_values, merge_chains, split_chains
from ._pyro_program import Optimum, PyroProgram, bind, isolated, lbfgs, robust_cholesky, to_numpy, value_and_grad
from ._result import Result
from ._svi import _DECAY_POWER, _INIT_SCALE

_NEWTON_STEPS = 3
_AUTOGUIDES = {
    "normal": autoguide.AutoDiagonalNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
}


def map_estimate(model, args: tuple, kwargs: dict, *, seed: int, max_iter: int, progress: bool) -> Result:
    """:func:`bayeskit.inference.map_estimate` for a Pyro program: L-BFGS on the
    negative log joint of the constrained values (no Jacobian), in the unconstrained space."""
    with isolated(seed):
        program = bind(model, args, kwargs, routine="map_estimate")
        found = lbfgs(
            program.neg_log_joint, program.init_position, max_iter=max_iter, progress=progress, desc="map_estimate"
        )
        _check_finite(found, "map_estimate")
        with torch.no_grad():
            params = program.point(program.constrain(found.x))
    return map_result(model, params, found, list(program.latent_shapes), dict(program.observed))


def laplace(model, args: tuple, kwargs: dict, *, num_samples: int, seed: int, max_iter: int, progress: bool) -> Result:
    """:func:`bayeskit.inference.laplace` for a Pyro program: ``N(z_hat, H^-1)`` at the
    mode of Pyro's potential (Jacobian included), H from ``torch.autograd.functional.hessian``."""
    with isolated(seed):
        program = bind(model, args, kwargs, routine="laplace")
        found = lbfgs(program.potential, program.init_position, max_iter=max_iter, progress=progress, desc="laplace")
        _check_finite(found, "laplace")
        mode, hessian, newton_steps = _newton_polish(program.potential, found.x)
        value, grad = value_and_grad(program.potential, mode)
        potential_at_mode, grad_norm = float(value), float(torch.linalg.norm(grad))
        factor, jitter = robust_cholesky(hessian)
        if factor is None:
            raise ConvergenceError(
                "laplace: the Hessian at the mode is not positive definite even after adding "
                f"jitter {jitter:.3g} to its diagonal"
            )
        eps = torch.randn(num_samples, program.dim, dtype=mode.dtype)
        # z = mode + L^{-T} eps has covariance (L L^T)^{-1} = H^{-1}
        positions = mode + torch.linalg.solve_triangular(factor.T, eps.T, upper=True).T
        log_q = (
            -0.5 * program.dim * math.log(2 * math.pi)
            + torch.log(torch.diagonal(factor)).sum()
            - 0.5 * (eps**2).sum(-1)
        )
        with torch.no_grad():
            log_p = -torch.stack([program.potential(z) for z in positions])
            params = program.point(program.constrain(mode))
        groups = program.posterior_groups(program.constrain_batch(positions), num_chains=1)

    return laplace_result(
        model,
        params,
        found,
        newton_steps=newton_steps,
        grad_norm=grad_norm,
        jitter=float(jitter),
        potential_at_mode=potential_at_mode,
        latent_sites=list(program.latent_shapes),
        log_ratio=(to_numpy(log_p), to_numpy(log_q)),
        groups=groups,
    )


def _check_finite(found: Optimum, routine: str) -> None:
    if not math.isfinite(found.value):
        raise ConvergenceError(
            f"{routine}: the log density is not finite at the point L-BFGS reached after {found.n_iter} iterations"
        )


def _hessian(potential, x: torch.Tensor) -> torch.Tensor:
    hessian = torch.autograd.functional.hessian(potential, x.detach())
    return 0.5 * (hessian + hessian.T)


def _newton_polish(potential, mode: torch.Tensor):
    """A few Newton steps from the L-BFGS answer, kept only while they lower U (as in
    :func:`._laplace._newton_polish`): quadratic potentials are then solved to rounding."""
    hessian, taken = _hessian(potential, mode), 0
    for _ in range(_NEWTON_STEPS):
        factor, not_pd = torch.linalg.cholesky_ex(hessian)
        if int(not_pd) or not bool(torch.isfinite(factor).all()):
            break
        _, grad = value_and_grad(potential, mode)
        step = torch.cholesky_solve(grad[:, None], factor)[:, 0]
        candidate = mode - step
        with torch.no_grad():
            if not potential(candidate) <= potential(mode):
                break
        mode, hessian, taken = candidate, _hessian(potential, candidate), taken + 1
        if float(step.abs().max()) < 1e-12:
            break
    return mode, hessian, taken


def svi(
    model,
    args: tuple,
    kwargs: dict,
    *,
    guide,
    num_steps: int,
    learning_rate: float,
    num_samples: int,
    num_particles: int,
    optimizer,
    rank: int | None,
    seed: int,
    progress: bool,
) -> Result:
    """:func:`bayeskit.inference.svi` for a Pyro program.

    ``guide`` is ``"normal"``/``"mvn"``/``"lowrank"`` (Pyro's ``AutoDiagonalNormal``,
    ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``, started at the
    unconstrained mode with scale 0.1), ``"delta"`` (``AutoDelta``) or a Pyro guide
    program. The ELBO is Pyro's ``Trace_ELBO``; the step is Adam with the step-size
    rule and tail averaging of :mod:`._svi`, taken by :func:`._driver.run_python`.
    ``optimizer`` replaces Adam: a callable ``params -> torch.optim.Optimizer``
    (e.g. ``lambda p: torch.optim.SGD(p, lr=1e-3)``). ``info["guide_params"]`` holds
    the fitted guide parameters under Pyro's names, in their constrained space.
    """
    if optimizer is not None and not callable(optimizer):
        raise TypeError(
            "optimizer for a Pyro program must be a callable params -> torch.optim.Optimizer "
            f"(e.g. lambda p: torch.optim.Adam(p, lr=1e-3)), got {optimizer!r}"
        )
    with isolated(seed):
        program = bind(model, args, kwargs, routine="svi")
        if callable(guide):
            guide_fn, name = guide, "custom"
        elif guide == "delta":
            start = program.constrain(program.init_position)
            guide_fn, name = autoguide.AutoDelta(model, init_loc_fn=init_to_value(values=start)), guide
        else:
            start = program.constrain(_mode(program))
            options = {"rank": rank or math.ceil(math.sqrt(program.dim))} if guide == "lowrank" else {}
            family = _AUTOGUIDES[guide]
            guide_fn = family(model, init_loc_fn=init_to_value(values=start), init_scale=_INIT_SCALE, **options)
            name = guide
        leaves = _guide_parameters(program, guide_fn)
        elbo = _fit(program, guide_fn, leaves, num_steps, learning_rate, num_particles, optimizer, progress, name)
        guide_params = {
            site: to_numpy(node["value"]).tolist()
            for site, node in poutine.trace(guide_fn, param_only=True)
            .get_trace(*program.args, **program.kwargs)
            .nodes.items()
        }
        groups = {"observed_data": dict(program.observed)}
        with torch.no_grad():
            if name == "delta":
                point = program.point(guide_fn.median(*program.args, **program.kwargs))
            else:
                latents, log_p, log_q = _guide_draws(program, guide_fn, num_samples)
                groups = program.posterior_groups(latents, num_chains=1)
                groups["sample_stats"] = {"log_p": log_p[None], "log_q": log_q[None]}
                if name == "custom":  # a guide program has no mode: its point is the mean under q
                    point = {k: v[0].mean(axis=0) for k, v in groups["draws"].items()}
                else:
                    point = program.point(guide_fn.median(*program.args, **program.kwargs))
    return Result(
        method="svi",
        model=model,
        params=point,
        trace={"elbo": elbo},
        converged=plateaued(elbo)[0],
        info={
            "guide": name,
            "n_iter": int(len(elbo)),
            "num_particles": num_particles,
            "final_elbo": float(np.mean(elbo[-max(len(elbo) // 10, 1) :])),
            "latent_sites": list(program.latent_shapes),
            "guide_params": guide_params,
        },
        **groups,
    )


def _mode(program: PyroProgram) -> torch.Tensor:
    """Where the Gaussian families start: the mode if L-BFGS finds one, else Pyro's initial point."""
    found = lbfgs(program.potential, program.init_position, max_iter=500, progress=False)
    return found.x if found.converged else program.init_position


def _guide_parameters(program: PyroProgram, guide) -> list[torch.Tensor]:
    """The unconstrained leaf tensors of the guide's parameters, created by running it
    once (as Pyro's ``SVI`` collects them), and a check that it covers the model."""
    try:
        with poutine.trace() as capture:
            guide(*program.args, **program.kwargs)
    except Exception as exc:
        raise ValueError(f"svi: the guide raised {type(exc).__name__}: {exc}") from exc
    nodes = capture.trace.nodes
    sampled = {name for name, site in nodes.items() if site["type"] == "sample"}
    missing = sorted(set(program.latent_shapes) - sampled)
    if missing:
        raise ValueError(f"svi: the guide must sample every latent site of the model; it leaves out {missing}")
    leaves = {id(u): u for site in nodes.values() if site["type"] == "param" for u in [site["value"].unconstrained()]}
    if not leaves:
        raise ValueError("svi: the guide has no pyro.param sites to fit")
    return list(leaves.values())


def _fit(program, guide, leaves, num_steps, learning_rate, num_particles, optimizer, progress, name) -> np.ndarray:
    """Adam (or ``optimizer``) on the guide's parameters with tail averaging over the
    second half; the averaged parameters are written back into the guide."""
    loss_fn = Trace_ELBO(num_particles=num_particles).differentiable_loss
    if optimizer is None:
        optim = torch.optim.Adam(leaves, lr=learning_rate)
        hold, tau = num_steps // 2, max(num_steps / 20, 1.0)
        # the step-size rule of ._svi.default_schedule, as a factor on learning_rate
        schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda t: (1.0 + max(t - hold, 0) / tau) ** -_DECAY_POWER)
    else:
        optim, schedule = optimizer(leaves), None
    start = num_steps // 2
    average = [leaf.detach().clone() for leaf in leaves]

    failure = []

    def step(average, t):
        try:
            loss = loss_fn(program.model, guide, *program.args, **program.kwargs)
        except ValueError as exc:
            if "invalid values" not in str(exc):
                raise
            # Pyro's argument validation meeting a NaN parameter: a non-finite ELBO by another name
            failure.append(str(exc).splitlines()[0])
            loss = torch.tensor(math.nan)
        if not bool(torch.isfinite(loss)):
            return average, {"elbo": math.nan}  # the driver stops here; nothing was updated
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            leaf.grad = torch.zeros_like(leaf) if grad is None else grad
        optim.step()
        if schedule is not None:
            schedule.step()
        if t >= start:
            with torch.no_grad():
                for mean, leaf in zip(average, leaves, strict=True):
                    mean.add_((leaf - mean) / (t - start + 1))
        return average, {"elbo": -loss.item()}

    out = _driver.run_python(
        step, average, range(num_steps), objective="elbo", total=num_steps, progress=progress, desc=f"svi ({name})"
    )
    if out.failed:
        raise ConvergenceError(
            f"svi: the ELBO became non-finite at step {int(out.n_iter)}"
            + "".join(f" ({reason})" for reason in failure)
            + "; lower learning_rate or check the model"
        )
    with torch.no_grad():
        for leaf, mean in zip(leaves, out.state, strict=True):
            leaf.copy_(mean)
            leaf.grad = None
    return out.trace["elbo"]


def _guide_draws(program: PyroProgram, guide, num_samples: int):
    """Draws of the latent sites from the fitted guide, with ``log_p = -U(z)`` and
    ``log_q`` the guide's density of the unconstrained position ``z``, as :mod:`._svi`
    reports them (the ratio is the same as for the densities of the constrained values)."""
    if _same_layout(program, guide):
        # an autoguide's posterior is a distribution over our own flat vector: draw in one go
        posterior = guide.get_posterior(*program.args, **program.kwargs)
        positions = posterior.sample((num_samples,))
        log_q = to_numpy(posterior.log_prob(positions))
        log_p = np.asarray([-float(program.potential(z)) for z in positions])
        return program.constrain_batch(positions), log_p, log_q
    rows, log_p, log_q = [], [], []
    for _ in range(num_samples):
        trace = poutine.trace(guide).get_trace(*program.args, **program.kwargs)
        values = {name: trace.nodes[name]["value"] for name in program.latent_shapes}
        z = program.unconstrain(values)
        rows.append(values)
        log_p.append(-float(program.potential(z)))
        # the guide's density of the constrained values, plus log |d theta / d z|
        log_q.append(float(trace.log_prob_sum() + program.log_jacobian(z)))
    latents = {name: np.stack([to_numpy(row[name]) for row in rows]) for name in program.latent_shapes}
    return latents, np.asarray(log_p), np.asarray(log_q)


def _same_layout(program: PyroProgram, guide) -> bool:
    """Does the autoguide pack the latent sites into its vector as we do? Checked on
    the fitted location rather than assumed from Pyro's internals."""
    if not isinstance(guide, autoguide.AutoContinuous) or guide.latent_dim != program.dim:
        return False
    ours = program.unconstrain(guide.median(*program.args, **program.kwargs))
    return bool(torch.allclose(ours, guide.loc.to(ours.dtype)))


def nuts(
    model,
    args: tuple,
    kwargs: dict,
    *,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    seed: int,
    target_accept: float,
    dense_mass: bool,
    max_tree_depth: int,
    init_values: dict | None,
    progress: bool,
) -> Result:
    """:func:`bayeskit.inference.nuts` for a Pyro program: Pyro's ``NUTS`` kernel run
    by its ``MCMC``, one chain after another (no worker processes), each continuing
    the same seeded RNG stream."""
    with isolated(seed):
        program = bind(model, args, kwargs, routine="nuts")
        start = init_to_uniform
        if init_values is not None:
            dtype = program.init_position.dtype
            values = check_init_values(init_values, program.latent_shapes)
            start = init_to_value(values={name: torch.as_tensor(v, dtype=dtype) for name, v in values.items()})
        try:
            runs = [
                _run_chain(program, num_warmup, num_samples, target_accept, dense_mass, max_tree_depth, start, progress)
                for _ in range(num_chains)  # each chain continues the seeded RNG stream of the one before
            ]
        except (RuntimeError, ValueError) as exc:
            if init_values is None:
                raise
            raise ValueError(BAD_INIT_VALUES.format(exc)) from exc
        grouped = {name: np.stack([draws[name] for draws, _ in runs]) for name in program.latent_shapes}
        groups = program.posterior_groups(merge_chains(grouped), num_chains=num_chains)
    stats = {key: np.stack([chain_stats[key] for _, chain_stats in runs]) for key in runs[0][1]}
    names = list(program.latent_shapes) + list(program.deterministic_names)
    return nuts_result(
        model, stats, groups, names=names, num_warmup=num_warmup, latent_sites=list(program.latent_shapes)
    )


def _run_chain(program, num_warmup, num_samples, target_accept, dense_mass, max_tree_depth, init_strategy, progress):
    kernel = NUTS(
        program.model, target_accept_prob=target_accept, full_mass=dense_mass, max_tree_depth=max_tree_depth,
        init_strategy=init_strategy,
    )  # fmt: skip
    recorded = {"acceptance_rate": [], "step_size": [], "lp": []}
    running = [0.0]

    def hook(kernel, params, stage, i):
        if not stage.startswith("Sample"):
            return
        # Pyro keeps only the running mean of the acceptance probability over the
        # draws; the i-th term is recovered from two consecutive means
        mean = float(kernel._mean_accept_prob)
        recorded["acceptance_rate"].append((i + 1) * mean - i * running[0])
        running[0] = mean
        recorded["step_size"].append(float(kernel.step_size))
        energy = getattr(kernel, "_potential_energy_last", None)  # the kernel's cache, at this draw
        if energy is None:
            with torch.no_grad():
                energy = program.potential(program.ravel(params))
        recorded["lp"].append(-float(energy))

    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=num_warmup,
        num_chains=1,
        disable_progbar=not progress,
        hook_fn=hook,
    )
    mcmc.run(*program.args, **program.kwargs)
    draws = {name: to_numpy(value) for name, value in mcmc.get_samples().items() if name in program.latent_shapes}
    diverging = np.zeros(num_samples, bool)
    diverging[np.asarray(mcmc.diagnostics()["divergences"]["chain 0"], int)] = True
    stats = {"diverging": diverging, **{k: np.asarray(v) for k, v in recorded.items()}}
    return draws, stats


def predictive(model, latents: dict, return_sites: list, args: tuple, kwargs: dict, *, seed: int) -> dict:
    """One draw of ``return_sites`` per row of ``latents`` (flat, ``(S, *shape)``): the
    program run with its latent sites conditioned on each draw in turn. Flat NumPy out.

    A loop rather than Pyro's ``Predictive``, which pads sites outside the plates with
    batch dimensions of size one.
    """
    with isolated(seed), torch.no_grad():
        num_draws = len(next(iter(latents.values())))
        rows = []
        for i in range(num_draws):
            values = {name: torch.as_tensor(value[i]) for name, value in latents.items()}
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args, **kwargs)
            rows.append({name: to_numpy(trace.nodes[name]["value"]) for name in return_sites})
    return {name: np.stack([row[name] for row in rows]) for name in return_sites}


def prior_predictive(model, args: tuple, kwargs: dict, *, num_samples: int, seed: int) -> dict:
    """Draws of every sample site (latent, observed left as ``None``, deterministic)
    from the prior, ``(1, num_samples, *shape)``."""
    with isolated(seed), torch.no_grad():
        rows = []
        for _ in range(num_samples):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
            rows.append(
                {
                    name: to_numpy(site["value"])
                    for name, site in trace.nodes.items()
                    if site["type"] == "sample"
                    and not site_is_subsample(site)
                    and not (site.get("infer") or {}).get("is_auxiliary")
                }
            )
    return split_chains({name: np.stack([row[name] for row in rows]) for name in rows[0]}, 1)
