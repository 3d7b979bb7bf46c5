"""Posterior and prior predictive draws of a program's observed sites."""

import contextlib

import numpy as np
from numpyro.infer import Predictive

from bayeskit.models._keys import as_key

from ._program import as_seed, detect_backend, merge_chains, split_chains
from ._result import Result
from ._validation import check_positive_int


def predictive(res: Result, *args, num_samples=None, rng_key=0, backend=None, **kwargs) -> dict[str, np.ndarray]:
    """Posterior predictive draws of the observed sites of ``res.model(*args, **kwargs)``.

    One predictive draw per posterior draw, ``(chain, draw, *shape)``; with
    ``num_samples`` the posterior draws are thinned (evenly, per chain) to that many
    per chain. Pass the model's arguments for the new inputs and leave the
    observations out (``y=None``) to predict. For a Pyro program (detected, or
    ``backend="pyro"``) the arguments are torch tensors and ``rng_key`` an ``int`` seed.
    """
    if not isinstance(res, Result):
        raise TypeError(f"res must be a Result, got {type(res).__name__}")
    if res.model is None or not callable(res.model):
        raise ValueError("predictive needs res.model, the program that was fitted; this Result has none")
    if not res.draws:
        raise ValueError(f"predictive needs posterior draws; this {res.method!r} Result has none")
    latents = {k: v for k, v in res.draws.items() if k in res.info.get("latent_sites", res.draws)}
    num_chains, num_draws = np.shape(next(iter(latents.values())))[:2]
    if num_samples is not None:
        num_samples = check_positive_int("num_samples", num_samples)
        if num_samples > num_draws:
            raise ValueError(f"num_samples must be at most the {num_draws} draws per chain, got {num_samples}")
        keep = np.linspace(0, num_draws - 1, num_samples).round().astype(int)
        latents = {k: v[:, keep] for k, v in latents.items()}
    observed = list(res.observed_data)
    if not observed:
        raise ValueError("predictive needs a Result that records which sites were observed")
    if detect_backend(res.model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        with _model_errors():
            draws = _pyro_door.predictive(
                res.model, merge_chains(latents), observed, args, kwargs, seed=as_seed(rng_key)
            )
        return _finite(split_chains(draws, num_chains))
    with _model_errors():
        draws = Predictive(res.model, posterior_samples=merge_chains(latents), return_sites=observed)(
            as_key(rng_key), *args, **kwargs
        )
    return _finite(split_chains({k: draws[k] for k in observed}, num_chains))


def prior_predictive(model, *args, num_samples: int = 1000, rng_key=0, backend=None, **kwargs) -> dict[str, np.ndarray]:
    """Draws of every sample site of ``model(*args, **kwargs)`` from the prior,
    ``(1, num_samples, *shape)``. Pass the observed sites as ``None`` to draw them."""
    num_samples = check_positive_int("num_samples", num_samples)
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro or Pyro program, got {type(model).__name__}")
    if detect_backend(model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        with _model_errors():
            draws = _pyro_door.prior_predictive(model, args, kwargs, num_samples=num_samples, seed=as_seed(rng_key))
        return _finite(draws)
    with _model_errors():
        draws = Predictive(model, num_samples=num_samples)(as_key(rng_key), *args, **kwargs)
    return _finite(split_chains(draws, 1))


@contextlib.contextmanager
def _model_errors():
    """An error inside the program is reported as one of the arguments it was given."""
    try:
        yield
    except Exception as exc:
        raise ValueError(f"the model raised {type(exc).__name__} when run with the given arguments: {exc}") from exc


def _finite(draws: dict) -> dict[str, np.ndarray]:
    """Draws, refused when any is NaN or inf: the mark of NaN or inf among the arguments."""
    draws = {name: np.asarray(value) for name, value in draws.items()}
    bad = {name: int(np.sum(~np.isfinite(v))) for name, v in draws.items() if np.issubdtype(v.dtype, np.number)}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        raise ValueError(f"predictive draws are NaN or inf ({bad} per site): check the arguments for NaN or inf")
    return draws
