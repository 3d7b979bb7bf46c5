"""Model classes, kernels, bases and embedded datasets (``bayeskit.models``)."""

from . import _config  # noqa: F401  (turns on float64 in JAX unless BAYESKIT_X64=0)

__all__: list[str] = []
