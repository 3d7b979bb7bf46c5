"""Stochastic-gradient inference for Pyro programs with a data plate: SGD to the MAP
with Robbins–Monro steps, and stochastic gradient Langevin dynamics.

The step-size convention, shared by both routines: ``step_size`` :math:`\\eta_t` is
the learning rate on the log posterior **per data point**,
:math:`\\bar g = \\nabla \\log \\tilde p(z) / N` (the gradient of the minibatch
estimate of :mod:`._sg_target`, divided by N). SGD moves by
:math:`z \\leftarrow z + \\eta_t \\bar g` and SGLD by

.. math::

    z \\leftarrow z + \\eta_t \\bar g + \\sqrt{2 \\eta_t T / N}\\; \\xi, \\quad \\xi \\sim N(0, I),

which is Welling & Teh's (2011) update with Langevin step
:math:`\\epsilon_t = 2\\eta_t / N` on the whole log posterior, at temperature ``T``.
So SGLD is SGD plus noise, and neither needs rescaling when N changes: on
standardised data a per-point step of 1e-2 to 1e-1 is what plain SGD on a mean loss
uses (``preconditioner=None``).

The default, ``preconditioner="rmsprop"``, multiplies :math:`\\bar g` by RMSprop's
diagonal :math:`G = 1 / (\\lambda + \\sqrt{\\hat V})` (:math:`\\hat V` the running mean
of :math:`\\bar g^2` with its start-up bias removed), and SGLD's noise then has
variance :math:`2\\eta_t T G / N` (pSGLD, Li et al. 2016, without the small
correction term for a moving :math:`G`, as in their experiments). Plain SGD is
stiff where the likelihood is sharp: with a Gaussian likelihood the curvature grows as
:math:`1/\\sigma^2`, so a step small enough for a low-noise fit is too small for
the rest, and the iterate settles where :math:`\\sigma` is large enough for the step
to be stable. RMSprop's step is in units of each parameter, whatever the curvature.
:math:`G` keeps adapting while draws are kept: a network's curvature changes as
units switch on and off, and a metric fixed at the end of warm-up lets a unit that
was inactive then take steps far too large once it is active again.

Each routine is an ``(init, step)`` pair driven by the plain Python driver; torch's
global RNG is forked and Pyro's parameter store scoped, so a call leaves the user's
state as it was.
"""

import math
from typing import NamedTuple

import numpy as np
import pyro
import torch

from ._checks import R_HAT_MAX, plateaued
from ._driver import run_python
from ._errors import ConvergenceError
from ._nuts import _max_split_r_hat
from ._pyro_program import isolated
from ._result import Result
from ._schedules import RobbinsMonro, as_schedule
from ._sg_target import Target, bind_target
from ._validation import check_choice, check_positive_float, check_positive_int

PLAIN_STEP_SIZE = RobbinsMonro(a=2.0, b=1000.0, gamma=0.55)  # 0.045 at t = 0, 0.018 at t = 5000
# with RMSprop a step is in units of the parameters: 0.022 falling to 0.009 for SGD,
# whose noise the iterate average removes; SGLD's bias grows with the step, so smaller
RMSPROP_STEP_SIZE = RobbinsMonro(a=1.0, b=1000.0, gamma=0.55)
PSGLD_STEP_SIZE = RobbinsMonro(a=0.3, b=1000.0, gamma=0.55)
PRECONDITIONERS = (None, "rmsprop")
_RMSPROP_DECAY, _RMSPROP_EPS = 0.99, 1e-5
_PROBE_POINTS = 16  # training inputs at which chains are compared through what they predict
_NOISE_BATCHES = 8  # minibatches for the gradient-noise estimate


class SGState(NamedTuple):
    position: torch.Tensor  # the flat vector of unconstrained latents
    square_avg: torch.Tensor | None  # RMSprop's running mean of the squared per-point gradient
    kept: tuple  # constrained draws kept so far (SGLD), each a dict of arrays
    average: torch.Tensor  # Polyak–Ruppert average of the iterates so far (SGD)


class SGStep(NamedTuple):
    """One minibatch step; ``temperature=0`` is SGD. ``item`` is ``(t, batch_indices)``."""

    target: Target
    X: torch.Tensor
    y: torch.Tensor
    schedule: object
    temperature: float
    rmsprop: bool
    jacobian: bool
    generator: torch.Generator
    keep_from: int  # first step whose draw may be kept
    thinning: int
    average_from: int  # first step whose iterate enters the Polyak–Ruppert average

    def __call__(self, state: SGState, item):
        t, index = item
        num_data = self.target.num_data
        log_post, grad = self.target.value_and_grad(
            state.position, self.X[index], self.y[index], likelihood_scale=num_data / len(index), jacobian=self.jacobian
        )
        eta = float(self.schedule(t))
        square = state.square_avg
        with torch.no_grad():
            grad = grad / num_data
            if self.rmsprop:
                square = _RMSPROP_DECAY * square + (1 - _RMSPROP_DECAY) * grad * grad
                precondition = _rmsprop_diagonal(square, t)
                grad = precondition * grad
            new = state.position + eta * grad
            if self.temperature > 0:
                noise = torch.randn(new.shape, generator=self.generator, dtype=new.dtype)
                if self.rmsprop:
                    noise = noise * precondition.sqrt()
                new = new + math.sqrt(2 * eta * self.temperature / num_data) * noise
            average = state.average
            if t >= self.average_from:
                average = average + (new - average) / (t - self.average_from + 1)
        kept = state.kept
        if t >= self.keep_from and (t - self.keep_from + 1) % self.thinning == 0:
            kept = (*kept, {k: v.numpy().copy() for k, v in self.target.constrain(new).items()})
        info = {"loss": -log_post / num_data, "step_size": eta}
        return SGState(new, square, kept, average), info


def _rmsprop_diagonal(square_avg: torch.Tensor, t: int) -> torch.Tensor:
    """RMSprop's diagonal after step ``t``, with the running mean's start-up bias
    removed (as Adam does), so that the first steps are not oversized."""
    return 1.0 / (_RMSPROP_EPS + (square_avg / (1 - _RMSPROP_DECAY ** (t + 1))).sqrt())


def init(target: Target, generator: torch.Generator, rmsprop: bool) -> SGState:
    position = target.init(generator)
    return SGState(position, torch.zeros_like(position) if rmsprop else None, (), torch.zeros_like(position))


def robbins_monro(
    model,
    X,
    y,
    *,
    num_steps: int = 5000,
    batch_size: int = 64,
    step_size=None,
    preconditioner: str | None = "rmsprop",
    plate: str = "data",
    rng_key: int = 0,
    progress: bool = True,
) -> Result:
    """MAP estimate of a Pyro program by minibatch SGD with Robbins–Monro steps.

    Maximises :math:`\\log p(\\theta) + \\sum_i \\log p(y_i \\mid X_i, \\theta)` over
    the constrained latents (no Jacobian, as :func:`map_estimate`), moving in the
    unconstrained space with the minibatch estimate whose plate sites are scaled by
    N / ``batch_size`` (module docstring for the step-size convention). With
    ``step_size`` a :class:`RobbinsMonro` schedule the steps satisfy
    :math:`\\sum \\eta_t = \\infty`, :math:`\\sum \\eta_t^2 < \\infty`, so the iterate
    converges to a local optimum instead of hovering at a noise floor (Robbins &
    Monro 1951); a float is a constant step and a :class:`Cyclical` schedule
    restarts, both flagged by ``diagnose``. The estimate is the average of the
    iterates over the second half of the run (Polyak & Juditsky 1992), which removes
    most of the noise left by the last steps without making them smaller.

    ``model(X, y)`` must put its likelihood in ``pyro.plate(plate, X.shape[0])``.

    Returns a Result with ``params`` (the averaged iterate, constrained), ``trace["loss"]``
    and ``trace["step_size"]`` per step (the loss is the minibatch estimate of the
    negative log posterior per data point) and ``info`` with the schedule;
    ``converged`` when the loss has plateaued (the last tenth's mean within three
    standard errors of the tenth before).

    Example
    -------
    >>> net = BayesianMLP(in_features=10, hidden=(50,))
    >>> res = robbins_monro(net, X, y, num_steps=5000)      # doctest: +SKIP
    """
    num_steps = check_positive_int("num_steps", num_steps)
    setup = _setup(model, X, y, batch_size, step_size, preconditioner, plate, rng_key, "robbins_monro")
    with isolated(rng_key):
        target, X, y, schedule, generator = setup()
        # nothing is kept; the iterates of the second half are averaged
        step = SGStep(
            target, X, y, schedule, temperature=0.0, rmsprop=preconditioner == "rmsprop", jacobian=False,
            generator=generator, keep_from=num_steps, thinning=1, average_from=num_steps // 2,
        )  # fmt: skip
        state = init(target, generator, step.rmsprop)
        out = _run(step, state, num_steps, batch_size, progress, "robbins_monro")
        params = {k: v.numpy() for k, v in target.constrain(out.state.average).items()}
    converged, z = plateaued(out.trace["loss"])
    return Result(
        method="robbins_monro",
        model=model,
        params=params,
        trace=out.trace,
        converged=converged,
        observed_data=target.observed,
        info={
            **_info(schedule, num_steps, batch_size, preconditioner, target),
            "loss_plateau_z": z,
            "final_loss": float(np.mean(out.trace["loss"][-max(num_steps // 10, 1) :])),
        },
    )


def sgld(
    model,
    X,
    y,
    *,
    num_samples: int = 500,
    num_chains: int = 4,
    thinning: int = 10,
    num_warmup: int = 1000,
    batch_size: int = 64,
    step_size=None,
    temperature: float = 1.0,
    preconditioner: str | None = "rmsprop",
    plate: str = "data",
    rng_key: int = 0,
    progress: bool = True,
) -> Result:
    """Posterior draws of a Pyro program by stochastic gradient Langevin dynamics.

    Welling & Teh (2011) in the per-data-point convention of the module docstring,
    with the log density of the unconstrained latents (Jacobian included).
    ``num_warmup`` steps are discarded, then every ``thinning``-th of
    ``num_samples * thinning`` steps is kept, in each of ``num_chains`` chains run
    one after another from different starting points. ``temperature`` scales the
    injected noise (1 is the posterior; below 1 a "cold" posterior).

    SGLD is exact only as the step goes to zero: minibatch gradient noise adds
    variance of order :math:`\\eta N \\Sigma / (2B)` next to the injected
    :math:`2\\eta/N \\cdot N/2`; ``info["gradient_noise_ratio"]`` estimates that ratio
    at the end of each chain and ``diagnose`` warns above 1. With a decaying
    schedule, Welling & Teh weight draws by their step size:
    ``sample_stats["step_size"]`` holds it per draw.

    Returns a Result with ``draws`` ``(num_chains, num_samples, ...)`` of every latent
    site and ``log_joint`` (the log posterior density, unnormalised, on all the
    data); for :class:`~bayeskit.models.BayesianMLP`, whose weights are not
    identified, also ``f_probe``, the network's output at up to 16 training inputs,
    and R-hat and ESS are computed on those functionals only
    (``info["diagnostic_sites"]``). ``trace["neg_log_posterior"]`` (the minibatch
    estimate of the negative log posterior per data point) and ``trace["step_size"]``
    are ``(chain, step)``, warm-up included.
    ``converged`` is True when split R-hat of the diagnostic sites is below 1.01.

    Example
    -------
    >>> res = sgld(BayesianMLP(8, (50,)), X, y, num_samples=500)    # doctest: +SKIP
    >>> predictive(res, X_new)["y"].shape                           # doctest: +SKIP
    """
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    thinning = check_positive_int("thinning", thinning)
    num_warmup = check_positive_int("num_warmup", num_warmup, allow_zero=True)
    temperature = check_positive_float("temperature", temperature)
    setup = _setup(model, X, y, batch_size, step_size, preconditioner, plate, rng_key, "sgld")
    num_steps = num_warmup + num_samples * thinning
    chains, traces, noise = [], [], []
    with isolated(rng_key):
        target, X, y, schedule, generator = setup()
        step = SGStep(
            target, X, y, schedule, temperature=temperature, rmsprop=preconditioner == "rmsprop", jacobian=True,
            generator=generator, keep_from=num_warmup, thinning=thinning, average_from=num_steps,  # no average
        )  # fmt: skip
        for chain in range(num_chains):
            state = init(target, generator, step.rmsprop)
            out = _run(step, state, num_steps, batch_size, progress, f"sgld chain {chain + 1}/{num_chains}")
            chains.append({k: np.stack([d[k] for d in out.state.kept]) for k in target.shapes})
            traces.append(out.trace)
            noise.append(_gradient_noise_ratio(step, out.state, batch_size, num_steps - 1))
        draws = {k: np.stack([c[k] for c in chains]) for k in target.shapes}
        functionals = _functionals(target, draws, X, y)
    draws.update(functionals)
    diagnostic_sites = list(target.shapes) + ["log_joint"] if target.identified else list(functionals)
    r_hat = _max_split_r_hat(draws, diagnostic_sites) if num_chains > 1 else float("nan")
    kept_steps = num_warmup + thinning * np.arange(1, num_samples + 1) - 1
    return Result(
        method="sgld",
        model=model,
        draws=draws,
        # the minibatch estimate of -log posterior per point: a sampler's energy, not a loss to minimise
        trace={
            "neg_log_posterior": np.stack([trace["loss"] for trace in traces]),
            "step_size": np.stack([trace["step_size"] for trace in traces]),
        },
        converged=not r_hat >= R_HAT_MAX,
        observed_data=target.observed,
        info={
            **_info(schedule, num_steps, batch_size, preconditioner, target),
            "num_chains": num_chains,
            "num_warmup": num_warmup,
            "thinning": thinning,
            "temperature": temperature,
            "max_split_r_hat": r_hat,
            "diagnostic_sites": diagnostic_sites,
            "stationarity_z": [plateaued(trace["loss"][num_warmup:])[1] for trace in traces],
            "gradient_noise_ratio": noise,
        },
        sample_stats={"step_size": np.broadcast_to(schedule(kept_steps), (num_chains, num_samples)).copy()},
    )


def _setup(model, X, y, batch_size, step_size, preconditioner, plate, rng_key, routine):
    """Validate the arguments now; the returned thunk binds the program once the RNG is forked."""
    check_choice("preconditioner", preconditioner, PRECONDITIONERS)
    if isinstance(rng_key, bool) or not isinstance(rng_key, int):
        raise TypeError(f"rng_key must be an int seed for torch routines, got {type(rng_key).__name__}")
    if preconditioner is None:
        default = PLAIN_STEP_SIZE
    else:
        default = PSGLD_STEP_SIZE if routine == "sgld" else RMSPROP_STEP_SIZE
    schedule = as_schedule(step_size, default)
    batch_size = check_positive_int("batch_size", batch_size)
    X, y = _tensors(model, X, y)
    if batch_size > len(X):
        raise ValueError(f"batch_size must be at most the {len(X)} data points, got {batch_size}")

    def bind():
        generator = torch.Generator().manual_seed(rng_key)
        target = bind_target(model, X, y, plate=plate, routine=routine)
        return target, X, y, schedule, generator

    return bind


def _tensors(model, X, y):
    from bayeskit.models._bnn import BayesianMLP

    for name, value in (("X", X), ("y", y)):
        try:
            torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a numeric array or tensor, got {type(value).__name__}") from exc
    if isinstance(model, BayesianMLP):
        X, y = model.check_data(X, y)
    else:
        X, y = torch.as_tensor(X), torch.as_tensor(y)
    if X.ndim == 0 or len(X) == 0:
        raise ValueError(f"X must have at least one row, got shape {tuple(X.shape)}")
    if len(y) != len(X):
        raise ValueError(f"X and y must have the same number of rows, got {len(X)} and {len(y)}")
    for name, value in (("X", X), ("y", y)):
        if value.is_floating_point() and not torch.all(torch.isfinite(value)):
            raise ValueError(f"{name} contains {int((~torch.isfinite(value)).sum())} non-finite value(s) (NaN or inf)")
    return X, y


def _minibatches(num_data: int, batch_size: int, num_steps: int, generator: torch.Generator):
    """``(t, indices)``: shuffled epochs, each cut into batches of ``batch_size`` (the
    remainder of an epoch is dropped so every batch has the same size)."""
    t = 0
    while True:
        order = torch.randperm(num_data, generator=generator)
        for start in range(0, num_data - batch_size + 1, batch_size):
            if t == num_steps:
                return
            yield t, order[start : start + batch_size]
            t += 1


def _run(step: SGStep, state: SGState, num_steps: int, batch_size: int, progress: bool, desc: str):
    batches = _minibatches(step.target.num_data, batch_size, num_steps, step.generator)
    # the program's distributions were validated when it was bound; checking their
    # arguments again every step costs as much as evaluating them
    with pyro.validation_enabled(False):
        out = run_python(step, state, batches, objective="loss", total=num_steps, progress=progress, desc=desc)
    if out.failed:
        raise ConvergenceError(
            f"{desc}: the loss became non-finite at step {int(out.n_iter) + 1} of {num_steps} "
            f"(step size {float(step.schedule(int(out.n_iter))):.3g}); lower step_size or check the model"
        )
    return out


def _functionals(target: Target, draws: dict, X, y) -> dict[str, np.ndarray]:
    """The log joint on all the data per draw and, for a network, its output at
    probe inputs: what chains are compared on when the weights are not identified."""
    shape = next(iter(draws.values())).shape[:2]
    flat = {k: torch.as_tensor(v.reshape((-1,) + v.shape[2:])) for k, v in draws.items()}
    count = shape[0] * shape[1]
    with torch.no_grad():
        log_joint = [float(target.density({k: v[i] for k, v in flat.items()}, X, y, 1.0)) for i in range(count)]
        out = {"log_joint": np.asarray(log_joint).reshape(shape)}
        if not target.identified:
            probe = np.linspace(0, len(X) - 1, min(_PROBE_POINTS, len(X))).round().astype(int)
            f = target.model.predict(flat, X[probe])
            out["f_probe"] = f.numpy().reshape(shape + tuple(f.shape[1:]))
    return out


def _gradient_noise_ratio(step: SGStep, state: SGState, batch_size: int, t: int) -> float:
    """Minibatch noise in the drift against the injected noise, at the end of a chain.

    Per coordinate, ``eta^2 Var(g_bar) / (2 eta T / N)`` with ``Var(g_bar)`` over a
    few fresh minibatches (times the RMSprop diagonal when preconditioned); the
    90th percentile over the coordinates whose gradient varies at all. Above 1 the chain is wider than the posterior
    (Welling & Teh 2011, section 4).
    """
    target, num_data = step.target, step.target.num_data
    grads = []
    for _, index in _minibatches(num_data, batch_size, _NOISE_BATCHES, step.generator):
        _, grad = target.value_and_grad(
            state.position, step.X[index], step.y[index], likelihood_scale=num_data / batch_size, jacobian=True
        )
        grads.append(grad)
    variance = torch.stack(grads).var(0) / num_data**2
    if step.rmsprop:
        variance = variance * _rmsprop_diagonal(state.square_avg, t)
    eta = float(step.schedule(t))
    ratio = eta * num_data * variance / (2 * step.temperature)
    # coordinates with no gradient at all (a dead unit) say nothing about the noise
    moving = ratio[variance > 0]
    return float(torch.quantile(moving.double(), 0.9)) if moving.numel() else math.nan


def _info(schedule, num_steps, batch_size, preconditioner, target) -> dict:
    return {
        "n_iter": num_steps,
        "batch_size": batch_size,
        "num_data": target.num_data,
        "preconditioner": preconditioner,
        "step_size_schedule": schedule.to_dict(),
        "latent_sites": list(target.shapes),
    }
