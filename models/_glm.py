"""Generalised linear models: an exponential-family likelihood on a linear predictor.

:class:`GLM` is the single-response model; the spike-train models in ``_spikes``
reduce to it through the same small protocol, which is all :func:`fit_glm` reads:

``linear_problem(*data, offset, weights) -> LinearProblem``
    the design matrix, the responses of ``m`` independent problems that share it,
    the offset, observation weights and which coefficients each problem may use;
``unpack(coefficients) -> dict``
    coefficients ``(..., m, 1 + p)`` (intercept first) as the model's named parameters;
``spike_probability(params, *data) -> (T, m)``
    the probability of at least one event per bin, which the time-rescaling test reads.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlogy

from ._numerics import as_real_array, is_positive_number

FAMILIES = ("poisson", "bernoulli", "gaussian", "negative_binomial")
# the first link is the default: canonical, except for the negative binomial, whose
# canonical link needs a negative predictor; log is what statsmodels and nemos use
LINKS = {
    "poisson": ("log", "softplus"),
    "bernoulli": ("logit",),
    "gaussian": ("identity",),
    "negative_binomial": ("log",),
}
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class LinearProblem(NamedTuple):
    """``m`` GLMs sharing one design: ``eta[:, j] = X @ beta_j[1:] + beta_j[0] + offset``."""

    X: np.ndarray  # (N, p) design, without the intercept column
    y: np.ndarray  # (N, m) responses
    offset: np.ndarray  # (N,)
    weights: np.ndarray  # (N,) observation weights
    free: np.ndarray  # (m, 1 + p) bool: coefficients problem j estimates (the rest stay 0)
    family: "GLM"  # the likelihood every problem uses


@dataclass(frozen=True)
class GLM:
    r"""A generalised linear model :math:`y_i \sim F(g^{-1}(\eta_i))`,
    :math:`\eta_i = b + x_i^\top w + o_i`.

    Parameters
    ----------
    family : {"poisson", "bernoulli", "gaussian", "negative_binomial"}
    link : str, optional
        ``"log"`` (Poisson, negative binomial), ``"logit"`` (Bernoulli), ``"identity"``
        (Gaussian): the canonical link, except for the negative binomial (whose
        canonical link only allows a negative predictor). Poisson also takes
        ``"softplus"``, which grows linearly rather than exponentially.
    alpha : float
        Negative-binomial overdispersion, held fixed: :math:`\mathrm{Var}\,y = \mu + \alpha\mu^2`
        (statsmodels' ``NegativeBinomial(alpha)``).
    prior_scale : float, optional
        Used only when the GLM runs as a NumPyro program: ``weights ~ N(0, prior_scale^2)``.
        ``None`` is a flat prior, the likelihood alone. :func:`fit_glm` takes the same
        prior as ``l2 = 1 / prior_scale**2``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayeskit.inference import fit_glm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 2))
    >>> y = rng.poisson(np.exp(0.5 + X @ np.array([0.3, -0.2])))
    >>> res = fit_glm(GLM("poisson"), X, y, progress=False)
    >>> np.round(res.params["weights"], 1), round(float(res.params["intercept"]), 1)
    (array([ 0.3, -0.2]), 0.5)
    """

    family: str = "poisson"
    link: str | None = None
    alpha: float = 1.0
    prior_scale: float | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        link = LINKS[self.family][0] if self.link is None else self.link
        if link not in LINKS[self.family]:
            raise ValueError(f"link for family {self.family!r} must be one of {LINKS[self.family]}, got {link!r}")
        object.__setattr__(self, "link", link)
        if not is_positive_number(self.alpha):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if self.prior_scale is not None and not (math.isfinite(self.prior_scale) and self.prior_scale > 0):
            raise ValueError(f"prior_scale must be None or a finite number > 0, got {self.prior_scale!r}")

    # --- the likelihood, per observation and with unit dispersion ---------------------

    def log_likelihood(self, eta, y):
        """Log-likelihood of each ``y`` at linear predictor ``eta`` (Gaussian: unit variance)."""
        if self.family == "poisson":
            if self.link == "log":
                return y * eta - jnp.exp(eta) - gammaln(y + 1)
            mu = jax.nn.softplus(eta)
            return xlogy(y, mu) - mu - gammaln(y + 1)
        if self.family == "bernoulli":
            return y * eta - jax.nn.softplus(eta)
        if self.family == "gaussian":
            return -0.5 * (y - eta) ** 2 - _HALF_LOG_2PI
        r = 1.0 / self.alpha
        return (
            gammaln(y + r) - gammaln(r) - gammaln(y + 1)
            + y * (math.log(self.alpha) + eta) - (y + r) * jax.nn.softplus(eta + math.log(self.alpha))
        )  # fmt: skip

    def saturated_log_likelihood(self, y):
        """The log-likelihood with every mean equal to its observation (the deviance's baseline)."""
        if self.family == "poisson":
            return xlogy(y, y) - y - gammaln(y + 1)
        if self.family == "bernoulli":
            return jnp.zeros_like(y)
        if self.family == "gaussian":
            return jnp.full_like(y, -_HALF_LOG_2PI)
        r, a = 1.0 / self.alpha, self.alpha
        return gammaln(y + r) - gammaln(r) - gammaln(y + 1) + xlogy(y, a * y) - (y + r) * jnp.log1p(a * y)

    def mean(self, eta):
        """The inverse link: the expected response at ``eta``."""
        if self.link in ("log",):
            return jnp.exp(eta)
        if self.link == "softplus":
            return jax.nn.softplus(eta)
        if self.link == "logit":
            return jax.nn.sigmoid(eta)
        return eta

    def event_probability(self, eta):
        """P(y >= 1) at ``eta``: the spike probability of a bin, for counts and binary data."""
        if self.family == "gaussian":
            raise ValueError("the time-rescaling test needs counts or binary data; this GLM is Gaussian")
        mu = self.mean(eta)
        if self.family == "poisson":
            return -jnp.expm1(-mu)
        if self.family == "bernoulli":
            return mu
        return 1.0 - jnp.exp(-jnp.log1p(self.alpha * mu) / self.alpha)

    def link_function(self, mu):
        """``g(mu)``: used to start a fit at the intercept-only solution."""
        if self.link == "log":
            return np.log(mu)
        if self.link == "softplus":
            return np.log(np.expm1(mu))
        if self.link == "logit":
            return np.log(mu / (1 - mu))
        return mu

    def check_response(self, y, name: str = "y") -> np.ndarray:
        """``y`` as a float array after checking it lies in the family's support."""
        if y is None:
            raise TypeError(f"{name} must be an array of responses, got None")
        y = as_real_array(name, y)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(y)))} NaN or infinite values")
        if self.family in ("poisson", "negative_binomial"):
            if np.any(y < 0) or np.any(y != np.round(y)):
                bad = y[(y < 0) | (y != np.round(y))][:3]
                raise ValueError(f"{name} must hold non-negative integer counts for a {self.family} GLM, got {bad}")
        elif self.family == "bernoulli" and not np.all((y == 0) | (y == 1)):
            raise ValueError(f"{name} must hold 0/1 outcomes for a bernoulli GLM, got values {np.unique(y)[:5]}")
        return y

    # --- the fitting protocol ---------------------------------------------------------

    def linear_problem(self, X, y, *, offset=None, weights=None) -> LinearProblem:
        X = as_real_array("X", X)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise ValueError(f"X must have shape (N, p), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X is empty: at least one observation is needed")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"X must be finite; found {int(np.sum(~np.isfinite(X)))} NaN or infinite values")
        y = self.check_response(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X {X.shape}, got {y.shape}")
        return LinearProblem(
            X, y[:, None], observation_vector(offset, "offset", X.shape[0], 0.0),
            observation_vector(weights, "weights", X.shape[0], 1.0, nonnegative=True),
            np.ones((1, 1 + X.shape[1]), bool), self,
        )  # fmt: skip

    def unpack(self, coefficients, *, derived: bool = True) -> dict:
        del derived  # a GLM's parameters are its coefficients
        coefficients = np.asarray(coefficients)[..., 0, :]
        return {"intercept": coefficients[..., 0], "weights": coefficients[..., 1:]}

    def spike_probability(self, params, X, y):
        """P(y >= 1) for each observation: ``(N, 1)``; ``X`` and ``y`` are checked as for a fit."""
        problem = self.linear_problem(X, y)
        weights = np.asarray(params["weights"])
        if problem.X.shape[1] != weights.shape[-1]:
            raise ValueError(f"X has {problem.X.shape[1]} columns, but the fit has {weights.shape[-1]} weights")
        eta = problem.X @ weights + params["intercept"]
        return np.asarray(self.event_probability(jnp.asarray(eta)))[:, None]

    # --- the GLM as a NumPyro program -------------------------------------------------

    def __call__(self, X, y=None, *, offset=None, weights=None):
        """``intercept`` (flat prior), ``weights`` (flat or ``N(0, prior_scale^2)``),
        ``sigma`` for the Gaussian family (flat on the positive line), then ``y``."""
        import numpyro
        import numpyro.distributions as dist

        X = jnp.asarray(X)
        X = X[:, None] if X.ndim == 1 else X
        intercept = numpyro.sample("intercept", dist.ImproperUniform(dist.constraints.real, (), ()))
        if self.prior_scale is None:
            prior = dist.ImproperUniform(dist.constraints.real, (), (X.shape[1],))
        else:
            prior = dist.Normal(0.0, self.prior_scale).expand((X.shape[1],)).to_event(1)
        w = numpyro.sample("weights", prior)
        eta = X @ w + intercept + (0.0 if offset is None else jnp.asarray(offset))
        mu = self.mean(eta)
        if self.family == "poisson":
            likelihood = dist.Poisson(mu)
        elif self.family == "bernoulli":
            likelihood = dist.Bernoulli(logits=eta)
        elif self.family == "gaussian":
            sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
            likelihood = dist.Normal(eta, sigma)
        else:
            likelihood = dist.NegativeBinomial2(mu, 1.0 / self.alpha)
        with numpyro.plate("data", X.shape[0]), numpyro.handlers.scale(scale=1.0 if weights is None else weights):
            return numpyro.sample("y", likelihood, obs=None if y is None else jnp.asarray(y))


def observation_vector(value, name: str, n: int, default: float, *, nonnegative: bool = False) -> np.ndarray:
    """A per-observation vector (offset, weights): ``None`` gives ``default`` everywhere."""
    if value is None:
        return np.full(n, default)
    value = as_real_array(name, value)
    if value.ndim == 0:
        value = np.full(n, float(value))
    if value.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(value)))} NaN or infinite values")
    if nonnegative and (np.any(value < 0) or not np.any(value > 0)):
        raise ValueError(f"{name} must be >= 0 with at least one > 0, got min {value.min()} and max {value.max()}")
    return value
