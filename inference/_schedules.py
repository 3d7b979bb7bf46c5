"""Step-size schedules for stochastic approximation, shared by online EM and SGD/SGLD."""

from dataclasses import asdict, dataclass

from ._validation import check_positive_float


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
