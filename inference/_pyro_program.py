"""A Pyro program bound to its arguments, seen through its unconstrained space.

The torch twin of :mod:`._program`: the program is traced once, its latent, observed
and deterministic sites are read off the trace and checked, and Pyro's own
``initialize_model`` gives the bijections to the unconstrained space and the
potential (Jacobian included) that NUTS uses. Positions are flat torch vectors, one
slice per latent site in trace order; everything handed back to a ``Result`` is
NumPy.

Nothing here touches JAX: the two backends meet at NumPy (DESIGN, principle 4).
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from ._optimize import GTOL
from ._program import check_latent_sites, checked_observation, split_chains


@contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Run with torch's RNG forked and seeded, and an empty Pyro parameter store.

    Forking (not reseeding) leaves the user's global RNG stream where it was, and the
    store's own ``scope`` puts the user's parameters back afterwards, so a call has no
    effect on the caller's state (DESIGN, principle 3).
    """
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        torch.manual_seed(seed)
        yield


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass(frozen=True)
class PyroProgram:
    """A Pyro program bound to ``args``/``kwargs``.

    ``potential(z)`` is Pyro's potential energy at the flat unconstrained position
    ``z`` (negative log joint, Jacobian included); ``neg_log_joint(z)`` is the same
    without the Jacobian, whose minimum is the mode of the constrained density.
    """

    model: Callable
    args: tuple
    kwargs: dict
    latent_shapes: dict[str, tuple[int, ...]]  # constrained shapes, in trace order
    deterministic_names: tuple[str, ...]
    observed: dict[str, np.ndarray]
    transforms: dict  # site -> Pyro's transform from the constrained to the unconstrained space
    init_position: torch.Tensor
    _unconstrained: dict[str, tuple[torch.Size, torch.dtype]]
    _potential_fn: Callable

    @property
    def dim(self) -> int:
        return int(self.init_position.numel())

    def unravel(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, (shape, dtype) in self._unconstrained.items():
            size = math.prod(shape)
            out[name] = position[start : start + size].reshape(shape).to(dtype)
            start += size
        return out

    def ravel(self, values: dict) -> torch.Tensor:
        dtype = self.init_position.dtype
        return torch.cat([values[name].reshape(-1).to(dtype) for name in self._unconstrained])

    def potential(self, position: torch.Tensor) -> torch.Tensor:
        return self._potential_fn(self.unravel(position))

    def constrain(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.transforms[name].inv(z) for name, z in self.unravel(position).items()}

    def unconstrain(self, values: dict) -> torch.Tensor:
        return self.ravel({name: self.transforms[name](torch.as_tensor(values[name])) for name in self.latent_shapes})

    def log_joint(self, values: dict) -> torch.Tensor:
        """log p(y, theta) at constrained latent values, no Jacobian."""
        conditioned = poutine.condition(self.model, data=values)
        return poutine.trace(conditioned).get_trace(*self.args, **self.kwargs).log_prob_sum()

    def neg_log_joint(self, position: torch.Tensor) -> torch.Tensor:
        return -self.log_joint(self.constrain(position))

    def log_jacobian(self, position: torch.Tensor) -> torch.Tensor:
        """log |d theta / d z| at ``position``: what turns a density of the constrained
        values into one of the unconstrained position."""
        total = torch.zeros((), dtype=position.dtype)
        for name, z in self.unravel(position).items():
            total = total - self.transforms[name].log_abs_det_jacobian(self.transforms[name].inv(z), z).sum()
        return total

    def constrain_batch(self, positions: torch.Tensor) -> dict[str, np.ndarray]:
        """Constrained latent values, one row per position in ``positions`` (S, dim)."""
        with torch.no_grad():
            rows = [self.constrain(z) for z in positions]
        return {name: np.stack([to_numpy(row[name]) for row in rows]) for name in self.latent_shapes}

    def evaluate(self, latents: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """Deterministic sites and the pointwise log-likelihood of every observed site,
        one row per draw of ``latents`` ``(S, *shape)``.

        The program is run once per draw rather than vectorised over a plate: a user's
        program need not broadcast over a leading batch dimension.
        """
        dtypes = {name: dtype for name, (_, dtype) in self._unconstrained.items()}
        deterministic = {name: [] for name in self.deterministic_names}
        log_lik = {name: [] for name in self.observed}
        num_draws = len(next(iter(latents.values())))
        with torch.no_grad():
            for i in range(num_draws):
                values = {name: torch.as_tensor(latents[name][i], dtype=dtypes[name]) for name in self.latent_shapes}
                trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(*self.args, **self.kwargs)
                for name in deterministic:
                    deterministic[name].append(to_numpy(trace.nodes[name]["value"]))
                for name in log_lik:
                    site = trace.nodes[name]
                    log_lik[name].append(to_numpy(site["fn"].log_prob(site["value"])))
        return {k: np.stack(v) for k, v in deterministic.items()}, {k: np.stack(v) for k, v in log_lik.items()}

    def point(self, values: dict) -> dict[str, np.ndarray]:
        """Latent and deterministic sites at one set of constrained latent values."""
        latents = {name: to_numpy(values[name])[None] for name in self.latent_shapes}
        deterministic, _ = self.evaluate(latents)
        return {name: v[0] for name, v in (latents | deterministic).items()}

    def posterior_groups(self, latents: dict[str, np.ndarray], num_chains: int) -> dict:
        """``draws``, ``log_likelihood`` and ``observed_data`` for a Result, from
        ``(chain * draw, ...)`` constrained draws of the latent sites."""
        deterministic, log_lik = self.evaluate(latents)
        return {
            "draws": split_chains(latents | deterministic, num_chains),
            "log_likelihood": split_chains(log_lik, num_chains),
            "observed_data": dict(self.observed),
        }


def bind(model, args: tuple, kwargs: dict, *, routine: str) -> PyroProgram:
    """Trace ``model(*args, **kwargs)`` and check it can go through ``routine``.

    Call inside :func:`isolated`: tracing draws from torch's RNG and registers the
    program's parameters in Pyro's store.
    """
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro program, got {type(model).__name__}")
    trace = _trace(model, args, kwargs)
    latent, observed, deterministic = {}, {}, []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue  # params, plates, the return value
        infer = site.get("infer") or {}
        if infer.get("_deterministic"):
            deterministic.append(name)  # Pyro records pyro.deterministic as an observed Delta
        elif infer.get("is_auxiliary"):
            continue  # pyro.factor terms: part of the density, not data
        elif site["is_observed"]:
            observed[name] = checked_observation(name, to_numpy(site["value"]), site["fn"].shape())
        else:
            latent[name] = site
    check_latent_sites(latent, observed, routine, other_backend="NumPyro")
    try:
        init, potential_fn, transforms, _ = initialize_model(model, model_args=args, model_kwargs=kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"the model's log density is not finite anywhere {routine} looked ({exc}); check the "
            "arguments for NaN or inf and that observations lie in their distributions' support"
        ) from exc
    names = list(latent)
    unconstrained = {name: (init[name].shape, init[name].dtype) for name in names}
    dtype = _common_dtype(name_dtype for _, name_dtype in unconstrained.values())
    init_position = torch.cat([init[name].detach().reshape(-1).to(dtype) for name in names])
    return PyroProgram(
        model=model,
        args=tuple(args),
        kwargs=dict(kwargs),
        latent_shapes={name: tuple(latent[name]["value"].shape) for name in names},
        deterministic_names=tuple(deterministic),
        observed=observed,
        transforms={name: transforms[name] for name in names},
        init_position=init_position,
        _unconstrained=unconstrained,
        _potential_fn=potential_fn,
    )


def _trace(model, args, kwargs):
    try:
        return poutine.trace(InitMessenger(_init_for_tracing)(model)).get_trace(*args, **kwargs)
    except Exception as exc:
        hint = ""
        if "dtype" in str(exc) or "Double" in str(exc) or "Float" in str(exc):
            hint = (
                ". Pyro programs run with the tensors as given: make the priors' parameters the same dtype as "
                "the data (e.g. torch.zeros(d, dtype=X.dtype)) or set torch.set_default_dtype(torch.float64)"
            )
        raise ValueError(
            f"the model raised {type(exc).__name__} when run with the given arguments: {exc}{hint}"
        ) from exc


def _init_for_tracing(site):
    """Continuous latent sites take initial values as NumPyro's bind gives them, so
    improper priors (which cannot be sampled) trace like any other; discrete ones are
    sampled, so that bind can name them in its error rather than Pyro failing first."""
    if site["fn"].support.is_discrete:
        return site["fn"].sample()
    return init_to_uniform(site)


def _common_dtype(dtypes) -> torch.dtype:
    common = None
    for dtype in dtypes:
        common = dtype if common is None else torch.promote_types(common, dtype)
    return common if common is not None and common.is_floating_point else torch.get_default_dtype()


class Optimum(NamedTuple):
    x: torch.Tensor
    value: float
    grad_norm: float
    trace: np.ndarray  # objective per iteration
    n_iter: int
    converged: bool  # gradient norm below GTOL * max(1, |f|) at x


def value_and_grad(fun: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fun(x)`` and its gradient in ``x`` only: ``torch.autograd.grad`` rather than
    ``backward`` so no ``.grad`` accumulates on the parameters of a user's module."""
    x = x.detach().requires_grad_(True)
    value = fun(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def lbfgs(fun: Callable, x0: torch.Tensor, *, max_iter: int = 1000, progress: bool = True, desc: str = "") -> Optimum:
    """Minimise ``fun`` from ``x0`` with torch's L-BFGS and a strong Wolfe line search.

    Called once (torch loops inside). ``converged`` is judged afterwards on the
    gradient, as in :func:`._optimize.lbfgs`.
    """
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    best: dict[int, float] = {}  # lowest value L-BFGS saw in each iteration (the line search evaluates several)

    with tqdm(total=max_iter, desc=desc, disable=not progress, delay=1.0, leave=False) as bar:

        def closure():
            value = fun(x)
            x.grad = torch.autograd.grad(value, x)[0]
            iteration = optimizer.state[x].get("n_iter", 0)
            if iteration not in best:
                bar.update()
            best[iteration] = min(best.get(iteration, math.inf), value.item())
            return value.detach()

        optimizer.step(closure)
    value, grad = value_and_grad(fun, x)
    value, grad_norm = float(value), float(torch.linalg.norm(grad))
    converged = bool(math.isfinite(value) and grad_norm < GTOL * max(1.0, abs(value)))
    trace = np.asarray([best[i] for i in sorted(best) if i > 0])
    return Optimum(x.detach(), value, grad_norm, trace, int(optimizer.state[x].get("n_iter", 0)), converged)


def robust_cholesky(matrix: torch.Tensor, *, max_tries: int = 8, relative_jitter: float = 1e-10):
    """Torch twin of :func:`bayeskit.models._numerics.robust_cholesky`: the factor of
    ``matrix + jitter I`` with the smallest jitter in ``0, r, 10 r, ...`` that works,
    and that jitter (the factor is None if even the largest fails)."""
    scale = max(float(matrix.diagonal().abs().mean()), torch.finfo(matrix.dtype).tiny)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype)
    for k in range(max_tries + 1):
        jitter = 0.0 if k == 0 else relative_jitter * scale * 10.0 ** (k - 1)
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
        if int(info) == 0 and bool(torch.isfinite(factor).all()):
            return factor, jitter
    return None, jitter
