"""A Bayesian multilayer perceptron written as a Pyro program.

Every weight and bias is a latent sample site, so the network goes through
``robbins_monro`` and ``sgld`` (and the generic routines) like any Pyro program.
Besides the program, the model has :meth:`BayesianMLP.log_joint`, the same density
computed with plain tensor operations: stochastic-gradient routines evaluate it
thousands of times, and tracing the program every step would cost more than the
network itself.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from ._numerics import is_integer, is_positive_number

LIKELIHOODS = ("gaussian", "bernoulli", "categorical")
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
NOISE_PRIOR_SCALE = 1.0  # HalfNormal scale of the Gaussian observation noise, in units of standardised y
_LOG_2PI = math.log(2 * math.pi)
_HALF_NORMAL_CONSTANT = math.log(2) - 0.5 * _LOG_2PI - math.log(NOISE_PRIOR_SCALE)


class BayesianMLP(PyroModule):
    r"""A fully connected network with Gaussian priors on its weights and biases.

    .. math::

        W_\ell \sim N(0, s^2 / n_{\ell-1}), \quad b_\ell \sim N(0, s^2), \quad
        f(x) = W_L\, a(\dots a(W_1 x + b_1) \dots) + b_L

    with :math:`s` = ``prior_scale`` and :math:`n_{\ell-1}` the layer's fan-in, so the
    prior over functions keeps the same scale whatever the width (Neal 1996). The
    likelihood is, per data point, ``"gaussian"``: :math:`y \sim N(f(x), \sigma^2)`
    with :math:`\sigma \sim \mathrm{HalfNormal}(1)` inferred; ``"bernoulli"``:
    :math:`y \sim \mathrm{Bernoulli}(\mathrm{logit}=f(x))` (``out_features=1``);
    ``"categorical"``: :math:`y \sim \mathrm{Categorical}(\mathrm{logits}=f(x))`.
    The observations sit in ``pyro.plate("data", N)``.

    Sites are named ``layers.{i}.weight``, ``layers.{i}.bias`` and ``sigma``; the
    observed site is ``y``. Inputs are cast to the network's dtype (float32 unless
    the module is converted).

    Example
    -------
    >>> net = BayesianMLP(in_features=8, hidden=(50,), out_features=1)
    >>> res = sgld(net, X, y, num_samples=500)       # doctest: +SKIP
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...] = (50,),
        out_features: int = 1,
        likelihood: str = "gaussian",
        prior_scale: float = 1.0,
        activation: str = "relu",
    ):
        super().__init__()
        if not isinstance(hidden, list | tuple):
            raise TypeError(f"hidden must be a tuple of layer widths, e.g. (50,), got {hidden!r}")
        hidden = tuple(hidden)
        sizes = {"in_features": (in_features,), "out_features": (out_features,), "hidden": hidden}
        for name, values in sizes.items():
            if any(not is_integer(v) or v < 1 for v in values):
                raise ValueError(f"{name} must be positive ints, got {values if name == 'hidden' else values[0]!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not is_positive_number(prior_scale):
            raise ValueError(f"prior_scale must be a finite number > 0, got {prior_scale!r}")
        if likelihood == "bernoulli" and out_features != 1:
            raise ValueError(f"a bernoulli likelihood needs out_features=1, got {out_features}")
        if likelihood == "categorical" and out_features < 2:
            raise ValueError(f"a categorical likelihood needs out_features >= 2 classes, got {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.hidden = tuple(int(width) for width in hidden)
        self.likelihood, self.prior_scale, self.activation = likelihood, float(prior_scale), activation
        sizes = (in_features, *hidden, out_features)
        self.layers = PyroModule[nn.ModuleList]([PyroModule[nn.Linear](a, b) for a, b in itertools.pairwise(sizes)])
        for layer in self.layers:
            layer.weight = PyroSample(
                dist.Normal(0.0, self.weight_scale(layer.in_features))
                .expand([layer.out_features, layer.in_features])
                .to_event(2)
            )
            layer.bias = PyroSample(dist.Normal(0.0, self.prior_scale).expand([layer.out_features]).to_event(1))
        if likelihood == "gaussian":
            self.sigma = PyroSample(dist.HalfNormal(NOISE_PRIOR_SCALE))
        # the Gaussian priors of log_joint, fixed once: it runs every step of SGD/SGLD
        self._num_layers = len(sizes) - 1
        self._scales = {}
        for i, layer in enumerate(self.layers):
            self._scales[f"layers.{i}.weight"] = (
                self.weight_scale(layer.in_features),
                layer.in_features * layer.out_features,
            )
            self._scales[f"layers.{i}.bias"] = (self.prior_scale, layer.out_features)
        self._precisions = torch.tensor([scale**-2 for scale, _ in self._scales.values()])
        self._prior_constant = -sum(size * (math.log(scale) + 0.5 * _LOG_2PI) for scale, size in self._scales.values())

    def _config(self) -> tuple[dict, dict]:
        """What rebuilds this network from a saved Result: its constructor's arguments, and no
        tensors, since every weight is a sample site whose values the Result's params and
        draws hold."""
        config = {
            "in_features": self.in_features,
            "hidden": list(self.hidden),
            "out_features": self.out_features,
            "likelihood": self.likelihood,
            "prior_scale": self.prior_scale,
            "activation": self.activation,
        }
        return config, {}

    @classmethod
    def _from_config(cls, config: dict, tensors: dict) -> "BayesianMLP":
        """The network :meth:`_config` describes (``tensors`` is empty)."""
        return cls(**config)

    def weight_scale(self, fan_in: int) -> float:
        return self.prior_scale / math.sqrt(fan_in)

    @property
    def dtype(self) -> torch.dtype:
        return torch.get_default_dtype()

    def prior_scales(self) -> dict[str, float]:
        """Standard deviation of the Gaussian prior of each weight and bias site."""
        return {name: scale for name, (scale, _) in self._scales.items()}

    def forward(self, X, y=None):
        f = self.predict({name: self._site(name) for name in self._scales}, X)
        sigma = self.sigma if self.likelihood == "gaussian" else None
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", self._distribution(f, sigma), obs=y)
        return f

    def _site(self, name):
        layer, attribute = name.rsplit(".", 1)
        return getattr(self.layers[int(layer.split(".")[1])], attribute)

    def predict(self, values: dict, X) -> torch.Tensor:
        """The network's output ``f(X)`` (N, out_features), or (N,) for one output, at
        the given weights and biases; a leading batch of draws on every value and on
        the output is allowed."""
        h = X
        activation = ACTIVATIONS[self.activation]
        for i in range(self._num_layers):
            weight, bias = values[f"layers.{i}.weight"], values[f"layers.{i}.bias"]
            if weight.ndim == 2:
                h = torch.addmm(bias, h, weight.T)
            else:
                h = torch.baddbmm(
                    bias.unsqueeze(-2), h.expand(weight.shape[0], *h.shape[-2:]), weight.transpose(-1, -2)
                )
            if i < self._num_layers - 1:
                h = activation(h)
        return h if self.likelihood == "categorical" or self.out_features > 1 else h.squeeze(-1)

    def _distribution(self, f, sigma):
        if self.likelihood == "gaussian":
            normal = dist.Normal(f, sigma)
            return normal if self.out_features == 1 else normal.to_event(1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=f)
        return dist.Categorical(logits=f)

    def log_joint(self, values: dict, X, y, likelihood_scale: float = 1.0) -> torch.Tensor:
        """``log p(values) + likelihood_scale * log p(y | X, values)``: the density of
        the program with the data plate scaled, without tracing it."""
        squares = torch.stack([torch.sum(values[name] ** 2) for name in self._scales])
        total = -0.5 * torch.dot(squares, self._precisions.to(squares.dtype)) + self._prior_constant
        f = self.predict(values, X)
        if self.likelihood == "gaussian":
            sigma = values["sigma"]
            total = total + _HALF_NORMAL_CONSTANT - 0.5 * (sigma / NOISE_PRIOR_SCALE) ** 2
            log_lik = -0.5 * torch.sum((y - f) ** 2) / sigma**2 - y.numel() * (torch.log(sigma) + 0.5 * _LOG_2PI)
        elif self.likelihood == "bernoulli":
            log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum")
        else:
            log_lik = -torch.nn.functional.cross_entropy(f, y, reduction="sum")
        return total + likelihood_scale * log_lik

    @torch.no_grad()
    def unconstrained_log_joint_and_grad(
        self, values: dict, X, y, likelihood_scale: float = 1.0, jacobian: bool = True
    ) -> tuple[float, dict]:
        """:meth:`log_joint` and its gradient, by backpropagation written out: for a
        network this small autograd's per-node bookkeeping costs more than the
        arithmetic, and this runs every step of SGD/SGLD.

        The noise enters as ``values["sigma"] = log(sigma)`` (the unconstrained
        parameterisation of the routines, ``biject_to`` of the positive reals), and with
        ``jacobian`` the density is that of ``log(sigma)``. The value is a float.
        """
        activation = ACTIVATIONS[self.activation]
        inputs, pre = [X], []
        h = X
        for i in range(self._num_layers):
            h = torch.addmm(values[f"layers.{i}.bias"], h, values[f"layers.{i}.weight"].T)
            if i < self._num_layers - 1:
                pre.append(h)
                h = activation(h)
                inputs.append(h)
        f = h if self.likelihood == "categorical" or self.out_features > 1 else h.squeeze(-1)
        grads = {}
        total = self._prior_constant
        if self.likelihood == "gaussian":
            # scalar arithmetic in Python floats: a torch op on a 0-d tensor costs microseconds
            log_sigma = float(values["sigma"])
            sigma = math.exp(log_sigma) if log_sigma < 700.0 else math.inf  # math.exp raises beyond 709
            if not 0.0 < sigma < math.inf:  # a step too large: let the driver stop the run
                return math.nan, {name: torch.full_like(v, math.nan) for name, v in values.items()}
            residual = y - f
            sse = float(torch.sum(residual**2))
            log_lik = -0.5 * sse / sigma**2 - y.numel() * (log_sigma + 0.5 * _LOG_2PI)
            delta = residual / sigma**2  # d log_lik / d f
            total += _HALF_NORMAL_CONSTANT - 0.5 * (sigma / NOISE_PRIOR_SCALE) ** 2 + (log_sigma if jacobian else 0.0)
            grad_sigma = likelihood_scale * (sse / sigma**3 - y.numel() / sigma) - sigma / NOISE_PRIOR_SCALE**2
            grads["sigma"] = torch.tensor(grad_sigma * sigma + (1.0 if jacobian else 0.0), dtype=X.dtype)
        elif self.likelihood == "bernoulli":
            log_lik = -float(torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="sum"))
            delta = y - torch.sigmoid(f)
        else:
            log_lik = -float(torch.nn.functional.cross_entropy(f, y, reduction="sum"))
            delta = -torch.softmax(f, dim=-1)
            delta[torch.arange(len(y)), y] += 1.0
        delta = likelihood_scale * delta.reshape(h.shape)
        for i in reversed(range(self._num_layers)):
            weight = values[f"layers.{i}.weight"]
            grads[f"layers.{i}.weight"] = delta.T @ inputs[i]
            grads[f"layers.{i}.bias"] = delta.sum(0)
            if i > 0:
                delta = (delta @ weight) * _activation_slope(self.activation, pre[i - 1], inputs[i])
        squares = []
        for name, (scale, _) in self._scales.items():
            squares.append(torch.sum(values[name] ** 2))
            grads[name] -= values[name] / scale**2
        total -= 0.5 * float(torch.dot(torch.stack(squares), self._precisions.to(X.dtype)))
        return total + likelihood_scale * log_lik, grads

    def check_data(self, X, y) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` and ``y`` as tensors of the network's types, or a ValueError that says what is wrong."""
        X = torch.as_tensor(X).to(self.dtype)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ValueError(f"X must have shape (N, {self.in_features}), got {tuple(X.shape)}")
        y = torch.as_tensor(y)
        expected = (
            (X.shape[0], self.out_features)
            if self.likelihood == "gaussian" and self.out_features > 1
            else (X.shape[0],)
        )
        if tuple(y.shape) != expected:
            raise ValueError(f"y must have shape {expected} to match X's {X.shape[0]} rows, got {tuple(y.shape)}")
        if self.likelihood == "categorical":
            if y.is_floating_point() and not torch.all(y == torch.round(y)):
                raise ValueError("y must hold integer class labels for a categorical likelihood")
            y = y.long()
            bad = (y < 0) | (y >= self.out_features)
            if torch.any(bad):
                raise ValueError(
                    f"y must hold class labels in [0, {self.out_features}); got {int(bad.sum())} outside, "
                    f"e.g. {int(y[bad][0])}"
                )
        else:
            y = y.to(self.dtype)
            if self.likelihood == "bernoulli" and not torch.all((y == 0) | (y == 1)):
                raise ValueError("y must hold 0/1 labels for a bernoulli likelihood")
        return X, y

    def init_values(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A draw of the weights and biases from the prior (a standard initialisation,
        since the prior scales with fan-in), with the observation noise at 1."""
        values = {}
        for i, layer in enumerate(self.layers):
            shape = (layer.out_features, layer.in_features)
            values[f"layers.{i}.weight"] = self.weight_scale(layer.in_features) * torch.randn(
                shape, generator=generator
            )
            values[f"layers.{i}.bias"] = torch.zeros(layer.out_features)
        if self.likelihood == "gaussian":
            values["sigma"] = torch.ones(())
        return {k: v.to(self.dtype) for k, v in values.items()}


def _activation_slope(name: str, pre, post):
    """The derivative of the activation at its input ``pre`` (its output is ``post``)."""
    return (pre > 0).to(pre.dtype) if name == "relu" else 1.0 - post**2
