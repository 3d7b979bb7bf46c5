"""Factor graphs on networkx (``bayeskit.graphs``)."""

from bayeskit.models import _config  # noqa: F401  (float64 in JAX unless BAYESKIT_X64=0)

__all__: list[str] = []
