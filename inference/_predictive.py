"""Posterior and prior predictive draws of a program's observed sites."""

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

        draws = _pyro_door.predictive(res.model, merge_chains(latents), observed, args, kwargs, seed=as_seed(rng_key))
        return split_chains(draws, num_chains)
    draws = Predictive(res.model, posterior_samples=merge_chains(latents), return_sites=observed)(
        as_key(rng_key), *args, **kwargs
    )
    return split_chains({k: draws[k] for k in observed}, num_chains)


def prior_predictive(model, *args, num_samples: int = 1000, rng_key=0, backend=None, **kwargs) -> dict[str, np.ndarray]:
    """Draws of every sample site of ``model(*args, **kwargs)`` from the prior,
    ``(1, num_samples, *shape)``. Pass the observed sites as ``None`` to draw them."""
    num_samples = check_positive_int("num_samples", num_samples)
    if detect_backend(model, backend) == "pyro":
        from . import _pyro_door  # torch is imported only once a Pyro program arrives

        return _pyro_door.prior_predictive(model, args, kwargs, num_samples=num_samples, seed=as_seed(rng_key))
    draws = Predictive(model, num_samples=num_samples)(as_key(rng_key), *args, **kwargs)
    return split_chains(draws, 1)
