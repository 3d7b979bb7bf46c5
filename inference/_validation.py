"""Boundary checks: each raises a ValueError or TypeError that names the argument,
what was expected and what was given."""

from collections.abc import Iterable
from numbers import Real

import numpy as np

from bayeskit.models._numerics import is_integer


def check_positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    if not is_integer(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_probability(name: str, value, *, open_interval: bool = True) -> float:
    value = check_positive_float(name, value, allow_zero=not open_interval)
    if value > 1 or (open_interval and value == 1):
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return value


def check_choice(name: str, value, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
