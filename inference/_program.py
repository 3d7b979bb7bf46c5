"""A NumPyro program bound to its arguments, seen through its unconstrained space.

Every generic routine (MAP, Laplace, SVI, NUTS) starts here: the program is traced
once, its latent, observed and deterministic sites are read off the trace and
checked, and it is given a flat unconstrained parameterisation (``ravel_pytree``
over NumPyro's own bijections) with the densities the routines need.
"""

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, initialize_model, log_density, log_likelihood

from ._validation import check_choice

BACKENDS = ("numpyro", "pyro")


def as_seed(rng_key) -> int:
    """Torch routines take an ``int`` seed (a JAX key has no meaning to torch)."""
    if isinstance(rng_key, bool | np.bool_) or not isinstance(rng_key, Integral):
        raise TypeError(f"rng_key must be an int seed for a Pyro program, got {type(rng_key).__name__} {rng_key!r}")
    return int(rng_key)


def detect_backend(model, backend: str | None) -> str:
    """Which PPL ``model`` is written in: ``"numpyro"`` or ``"pyro"``.

    Torch modules (a ``PyroModule``) are Pyro. For a function, the globals and closure
    variables it names are looked up: one that belongs to ``numpyro`` makes it NumPyro,
    else one that belongs to ``pyro`` or ``torch`` (the ``pyro`` module, ``pyro.sample``
    imported by name, a ``PyroModule`` it calls) makes it Pyro; failing both, a function
    that names ``pyro`` (but not ``numpyro``) is Pyro, and anything else NumPyro.
    ``backend=`` settles any doubt.
    """
    if backend is not None:
        return check_choice("backend", backend, BACKENDS)
    if _root(type(model).__module__) in ("pyro", "torch") or _is_torch_module(model):
        return "pyro"
    code = getattr(model, "__code__", None)
    if code is None:
        return "numpyro"
    roots = {_origin(value) for value in _referenced(model, code)}
    if "numpyro" in roots:
        return "numpyro"
    if roots & {"pyro", "torch"}:
        return "pyro"
    names = (*code.co_names, *code.co_freevars)
    return "pyro" if "pyro" in names and "numpyro" not in names else "numpyro"


def _root(module_name) -> str:
    return module_name.split(".")[0] if isinstance(module_name, str) else ""


def _referenced(function, code) -> list:
    """The objects a function's global and closure names refer to (those that resolve)."""
    namespace = getattr(function, "__globals__", {})
    found = [namespace[name] for name in code.co_names if name in namespace]
    for cell in getattr(function, "__closure__", None) or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:  # a cell not filled yet
            continue
    return found


def _origin(value) -> str:
    """The top-level package an object comes from: a module's own name, else the
    module its class or function was defined in ("" for plain data)."""
    if inspect.ismodule(value):
        return _root(value.__name__)
    if _is_torch_module(value):
        return "pyro"
    if callable(value):
        return _root(getattr(value, "__module__", ""))
    return ""


def _is_torch_module(model) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(model, torch.nn.Module)


@dataclass(frozen=True)
class Program:
    """A NumPyro program bound to ``args``/``kwargs``.

    Positions are flat unconstrained vectors; ``potential(z)`` is the negative log
    joint density in that space, Jacobian included, and ``neg_log_joint(z)`` the same
    without the Jacobian (whose minimum is the MAP of the constrained density).
    """

    model: Callable
    args: tuple
    kwargs: dict
    latent_shapes: dict[str, tuple[int, ...]]
    deterministic_names: tuple[str, ...]
    observed: dict[str, np.ndarray]
    init_position: jax.Array
    unravel: Callable[[jax.Array], dict]
    _potential_fn: Callable
    _postprocess_fn: Callable

    @property
    def dim(self) -> int:
        return int(self.init_position.size)

    def potential(self, position):
        return self._potential_fn(self.unravel(position))

    def neg_log_joint(self, position):
        constrained = constrain_fn(self.model, self.args, self.kwargs, self.unravel(position))
        return -log_density(self.model, self.args, self.kwargs, constrained)[0]

    def constrain(self, position) -> dict:
        """Constrained latent and deterministic sites at an unconstrained position."""
        return self._postprocess_fn(self.unravel(position))

    def constrain_batch(self, positions) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in jax.vmap(self.constrain)(positions).items()}

    def latents(self, draws: dict) -> dict:
        return {name: draws[name] for name in self.latent_shapes}

    def log_likelihood(self, flat_draws: dict) -> dict[str, np.ndarray]:
        """Pointwise log-likelihood of every observed site, one row per draw."""
        values = log_likelihood(self.model, self.latents(flat_draws), *self.args, batch_ndims=1, **self.kwargs)
        return {k: np.asarray(v) for k, v in values.items() if k in self.observed}


def bind(model, args: tuple, kwargs: dict, *, rng_key, routine: str) -> Program:
    """Trace ``model(*args, **kwargs)`` and check it can go through ``routine``."""
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro program, got {type(model).__name__}")
    trace = _trace(model, args, kwargs, rng_key)
    latent, observed, deterministic = {}, {}, []
    for name, site in trace.items():
        if site["type"] == "deterministic":
            deterministic.append(name)
        elif site["type"] != "sample" or site.get("infer", {}).get("is_auxiliary"):
            continue  # params, plates, and numpyro.factor terms (auxiliary, not data)
        elif site["is_observed"]:
            observed[name] = checked_observation(name, site["value"], site["fn"].shape())
        else:
            latent[name] = site
    check_latent_sites(latent, observed, routine, other_backend="Pyro")
    try:
        info = initialize_model(rng_key, model, model_args=args, model_kwargs=kwargs)
    except RuntimeError as exc:
        raise ValueError(
            f"the model's log density is not finite anywhere {routine} looked "
            f"({_nonfinite_sites(trace)}); check the arguments for NaN or inf "
            "and that observations lie in their distributions' support"
        ) from exc
    init_position, unravel = ravel_pytree(info.param_info.z)
    return Program(
        model=model,
        args=tuple(args),
        kwargs=dict(kwargs),
        latent_shapes={name: tuple(np.shape(site["value"])) for name, site in latent.items()},
        deterministic_names=tuple(deterministic),
        observed=observed,
        init_position=init_position,
        unravel=unravel,
        _potential_fn=info.potential_fn,
        _postprocess_fn=info.postprocess_fn,
    )


def check_latent_sites(latent: dict, observed: dict, routine: str, *, other_backend: str) -> None:
    """A program the generic routines can take has continuous latent sites (either PPL)."""
    if not latent:
        hint = "" if observed else f" (if it is a {other_backend} program, pass backend={other_backend.lower()!r})"
        raise ValueError(f"{routine} needs a model with latent sample sites; this one has none{hint}")
    discrete = [name for name, site in latent.items() if site["fn"].support.is_discrete]
    if discrete:
        raise ValueError(
            f"{routine} handles continuous latent sites only; {discrete} are discrete. "
            "Marginalise them out in the model (e.g. with a mixture distribution)"
        )


# what both backends' samplers raise when they cannot start from init_values
BAD_INIT_VALUES = "NUTS could not start from init_values ({}): check that each value lies in its site's support"


def check_init_values(init_values, latent_shapes: dict) -> dict[str, np.ndarray]:
    """``init_values`` as float arrays, each naming a latent site and matching its shape."""
    if not isinstance(init_values, dict):
        raise TypeError(f"init_values must be a dict of latent site values, got {type(init_values).__name__}")
    unknown = sorted(set(init_values) - set(latent_shapes))
    if unknown:
        raise ValueError(f"init_values names {unknown}, which are not latent sites; the latent sites are "
                         f"{list(latent_shapes)}")  # fmt: skip
    values = {}
    for name, value in init_values.items():
        array = np.asarray(value, float)
        if array.shape != latent_shapes[name]:
            raise ValueError(f"init_values[{name!r}] must have shape {latent_shapes[name]}, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"init_values[{name!r}] must be finite")
        values[name] = array
    return values


def _trace(model, args, kwargs, rng_key):
    try:
        # latent sites take values NumPyro's initialisation would give, so improper priors
        # (ImproperUniform, which cannot be sampled) trace like any other
        seeded = handlers.substitute(handlers.seed(model, rng_key), substitute_fn=init_to_uniform)
        return handlers.trace(seeded).get_trace(*args, **kwargs)
    except Exception as exc:
        raise ValueError(f"the model raised {type(exc).__name__} when run with the given arguments: {exc}") from exc


def checked_observation(name, value, distribution_shape) -> np.ndarray:
    """An observed site's value, refused if non-finite or if its distribution (batch and
    event shape, plates included) would broadcast it to a larger shape: a ``(N, 1)``
    column against an ``(N,)`` plate silently makes an ``N x N`` likelihood."""
    array = np.asarray(value)
    distribution_shape = tuple(distribution_shape)
    try:
        joint = np.broadcast_shapes(array.shape, distribution_shape)
    except ValueError:
        joint = None
    if joint != array.shape:
        raise ValueError(
            f"observed site {name!r} has shape {array.shape}, which does not match its distribution's shape "
            f"{distribution_shape} (plates included); pass it with the distribution's shape"
        )
    if np.issubdtype(array.dtype, np.number) and not np.all(np.isfinite(array)):
        count = int(np.sum(~np.isfinite(array)))
        raise ValueError(
            f"observed site {name!r} contains {count} non-finite value(s) (NaN or inf); "
            "drop or impute them before fitting"
        )
    return array


def _nonfinite_sites(trace) -> str:
    bad = []
    for name, site in trace.items():
        if site["type"] == "sample":
            log_prob = jnp.sum(site["fn"].log_prob(site["value"]))
            if not jnp.isfinite(log_prob):
                bad.append(name)
    return f"sites with non-finite log density: {bad}" if bad else "no single site to blame"


def split_chains(flat: dict, num_chains: int) -> dict[str, np.ndarray]:
    """(chain * draw, ...) arrays to (chain, draw, ...)."""
    return {k: np.asarray(v).reshape((num_chains, -1) + np.shape(v)[1:]) for k, v in flat.items()}


def merge_chains(draws: dict) -> dict[str, np.ndarray]:
    """(chain, draw, ...) arrays to (chain * draw, ...)."""
    return {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in draws.items()}


def posterior_groups(program: Program, flat_draws: dict, num_chains: int) -> dict:
    """``draws``, ``log_likelihood`` and ``observed_data`` for a Result, from
    ``(chain * draw, ...)`` constrained draws of the latent and deterministic sites."""
    return {
        "draws": split_chains(flat_draws, num_chains),
        "log_likelihood": split_chains(program.log_likelihood(flat_draws), num_chains),
        "observed_data": dict(program.observed),
    }
