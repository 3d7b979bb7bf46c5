"""Factor graphs on networkx (``bayeskit.graphs``)."""

from bayeskit.models import _config  # noqa: F401  (float64 in JAX unless BAYESKIT_X64=0)

from ._builders import chain, ising_grid, potts_grid
from ._exact import exact_marginals
from ._factor_graph import FactorGraph

__all__ = ["FactorGraph", "chain", "exact_marginals", "ising_grid", "potts_grid"]
