"""Example graphs: the shipped Bayesian networks and an image-denoising problem."""

from typing import NamedTuple

import jax
import numpy as np

from bayeskit.models._keys import as_key

from ._builders import grid_name, ising_grid
from ._factor_graph import FactorGraph
from ._readers import NETWORKS, load_network

__all__ = ["NETWORKS", "DenoisingProblem", "as_grid", "denoising_problem", "load_network"]


class DenoisingProblem(NamedTuple):
    clean: np.ndarray  # (n, n) spins in {-1, +1}
    noisy: np.ndarray  # the same with each spin flipped independently with probability flip
    graph: FactorGraph  # the Ising posterior p(clean | noisy)


def denoising_problem(n: int = 64, flip: float = 0.1, coupling: float = 1.0, rng_key=0) -> DenoisingProblem:
    """A binary image (a disc, a ring and a bar), its noisy copy, and the Ising posterior.

    Each pixel is flipped with probability ``flip``, so the likelihood of an
    observed spin ``y`` is ``exp(h y s)`` with ``h = log((1 - flip) / flip) / 2``; the
    prior is a ferromagnetic Ising model with ``coupling``. The posterior is
    ``ising_grid(n, n, coupling, field=h * noisy)``, and max-product on it is the
    MAP denoising.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 8:
        raise ValueError(f"n must be an int >= 8, got {n!r}")
    if not 0 < flip < 0.5:
        raise ValueError(f"flip must lie in (0, 0.5), got {flip}")
    u, v = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    radius = np.hypot(u + 0.3, v + 0.25)
    shape = (radius < 0.35) | ((np.hypot(u - 0.35, v - 0.3) - 0.35) ** 2 < 0.01) | ((np.abs(u - 0.55) < 0.12) & (v < 0))
    clean = np.where(shape, 1, -1)
    flips = np.asarray(jax.random.bernoulli(as_key(rng_key), flip, (n, n)))
    noisy = np.where(flips, -clean, clean)
    field = 0.5 * np.log((1 - flip) / flip) * noisy
    return DenoisingProblem(clean, noisy, ising_grid(n, n, coupling=coupling, field=field))


def as_grid(values: dict, n: int, m: int) -> np.ndarray:
    """Stack per-variable values of a grid (``res.params`` or ``res.marginals``) into an
    ``(n, m, ...)`` array, the variable ``x_i_j`` at ``[i, j]``."""
    return np.stack([np.stack([np.asarray(values[grid_name(i, j)]) for j in range(m)]) for i in range(n)])
