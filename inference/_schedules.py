"""Step-size schedules for stochastic approximation, shared by online EM and SGD/SGLD."""

from dataclasses import asdict, dataclass

import numpy as np

from ._validation import check_positive_float, check_positive_int


@dataclass(frozen=True)
class RobbinsMonro:
    r"""Robbins–Monro step sizes :math:`\eta_t = a\,(b + t)^{-\gamma}` for :math:`t = 0, 1, \dots`

    With :math:`\gamma \in (0.5, 1]` the steps satisfy the Robbins–Monro conditions
    :math:`\sum_t \eta_t = \infty` and :math:`\sum_t \eta_t^2 < \infty` (Robbins &
    Monro 1951), which is what lets a stochastic approximation converge to its
    fixed point instead of wandering at a noise floor; other exponents are refused.

    Parameters
    ----------
    a : float
        Scale, > 0.
    b : float
        Offset, > 0; a larger ``b`` keeps the early steps flatter.
    gamma : float
        Decay exponent in (0.5, 1].

    Examples
    --------
    >>> schedule = RobbinsMonro(a=1.0, b=1.0, gamma=0.6)
    >>> float(schedule(0)), round(float(schedule(3)), 4)
    (1.0, 0.4353)
    """

    a: float
    b: float = 1.0
    gamma: float = 0.6

    def __post_init__(self):
        check_positive_float("a", self.a)
        check_positive_float("b", self.b)
        gamma = check_positive_float("gamma", self.gamma)
        if not 0.5 < gamma <= 1.0:
            raise ValueError(
                f"gamma must lie in (0.5, 1] for the Robbins–Monro conditions to hold "
                f"(sum of steps infinite, sum of squares finite), got {gamma}"
            )

    def __call__(self, t):
        """The step size at iteration ``t`` (an int or an array of them)."""
        return self.a * (self.b + t) ** (-self.gamma)

    def to_dict(self) -> dict:
        return {"schedule": "robbins_monro", **asdict(self)}


@dataclass(frozen=True)
class Cyclical:
    r"""Cosine cyclical step sizes (Zhang et al. 2020, cyclical SG-MCMC):
    :math:`\eta_t = \frac{a}{2}\left(\cos\frac{\pi\,(t \bmod L)}{L} + 1\right)`.

    A deliberate departure from the Robbins–Monro conditions: each cycle starts
    with large steps that explore (and can leave a mode) and ends with small ones
    that sample it. The diagnostics flag it, since no single chain's step decays.
    Keep only draws from the end of each cycle for posterior summaries.

    Parameters
    ----------
    a : float
        Largest step, > 0.
    cycle_length : int
        Steps per cycle, >= 1.
    """

    a: float
    cycle_length: int

    def __post_init__(self):
        check_positive_float("a", self.a)
        check_positive_int("cycle_length", self.cycle_length)

    def __call__(self, t):
        return 0.5 * self.a * (np.cos(np.pi * (np.asarray(t) % self.cycle_length) / self.cycle_length) + 1.0)

    def to_dict(self) -> dict:
        return {"schedule": "cyclical", **asdict(self)}


@dataclass(frozen=True)
class Constant:
    """A constant step: SGD then ends in a noise ball around the optimum whose size
    grows with the step, and SGLD samples a distribution biased by O(step). Given as
    a plain float ``step_size``; the diagnostics flag it."""

    a: float

    def __post_init__(self):
        check_positive_float("step_size", self.a)

    def __call__(self, t):
        return self.a

    def to_dict(self) -> dict:
        return {"schedule": "constant", "a": self.a}


Schedule = RobbinsMonro | Cyclical | Constant


def as_schedule(step_size, default: RobbinsMonro) -> Schedule:
    """``None`` (the default), a float (constant) or a schedule object."""
    if step_size is None:
        return default
    if isinstance(step_size, RobbinsMonro | Cyclical | Constant):
        return step_size
    if isinstance(step_size, int | float) and not isinstance(step_size, bool):
        return Constant(float(step_size))
    raise TypeError(
        f"step_size must be a RobbinsMonro or Cyclical schedule, a positive float (constant) or None, "
        f"got {type(step_size).__name__}"
    )
