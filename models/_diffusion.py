r"""Diffusion models as values: a noise schedule, its timestep table, a noise-predicting network.

Every schedule is stored in one *variance-preserving* form: at training timestep
:math:`k = 0, \dots, T-1` (continuous time :math:`t_k = (k+1)/T`)

.. math::

    y_k = \alpha_k\, x_0 + \sigma_k\, \varepsilon, \qquad \alpha_k^2 + \sigma_k^2 = 1,
    \qquad \varepsilon \sim N(0, I),

where :math:`x_0` is the (normalised) data. The variance-exploding process of
Song & Ermon (2019), :math:`x_k = x_0 + \varsigma_k \varepsilon`, is the same process
seen at another scale: :math:`x_k = c_k\, y_k` with :math:`c_k = \sqrt{1 + \varsigma_k^2}`,
:math:`\alpha_k = 1/c_k`, :math:`\sigma_k = \varsigma_k / c_k` (Kingma et al. 2021;
Karras et al. 2022). The noise prediction :math:`\varepsilon` is the same in both, so one
network, one set of samplers and one likelihood serve every schedule, and the
network always sees inputs of unit scale. ``Schedule.scale`` holds :math:`c_k`
(1 for the VP schedules); only an analytic score, written in the schedule's own
units, needs it.

The :class:`TimestepTable` is the one place where the timesteps a sampler visits
are chosen. Its last entry is the clean end (:math:`t = 0`, :math:`\alpha = 1`,
:math:`\sigma = 0`), so every sampler's final step lands on the data, and no
sampler computes "the previous timestep" itself.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._diffusion_nets import ConvDenoiser, MLPDenoiser
from ._numerics import is_integer

SCHEDULES = ("linear", "cosine", "ve")
SPACINGS = ("linspace", "leading", "trailing")
DEFAULT_NUM_TIMESTEPS = 1000
_DEFAULT_NET_SEED = 0  # the default network's initial weights, drawn inside a forked RNG
_NETS = {"MLPDenoiser": MLPDenoiser, "ConvDenoiser": ConvDenoiser}  # the networks a saved Result rebuilds
_SCHEDULE_ARRAYS = ("t", "alpha", "sigma", "scale")

__all__ = ["ConvDenoiser", "DiffusionModel", "MLPDenoiser", "Schedule", "TimestepTable"]


def _check_int(name: str, value, low: int = 1) -> int:
    if not is_integer(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def _frozen(array) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TimestepTable:
    r"""The timesteps a sampler visits, noisiest first, and where each step goes.

    Entry ``i < num_steps`` is training timestep ``index[i]``; entry ``num_steps`` is
    the clean end (``t = 0``, ``alpha = 1``, ``sigma = 0``, ``scale = 1``). A sampler
    steps from entry ``i`` to entry ``i + 1`` and reads every coefficient here.

    Attributes
    ----------
    index : ndarray of int, (num_steps,)
        Training timesteps, strictly decreasing.
    t, alpha, sigma, scale : ndarray, (num_steps + 1,)
        Continuous time, VP signal and noise scales and the schedule's own scale
        (see the module docstring), the clean end last.
    spacing : str
        How ``index`` was chosen.
    """

    index: np.ndarray
    t: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    scale: np.ndarray
    spacing: str

    @property
    def num_steps(self) -> int:
        return len(self.index)


@dataclass(frozen=True, eq=False)
class Schedule:
    r"""A noise schedule on :math:`T` training timesteps, in the VP form of the module docstring.

    Build one with :meth:`linear`, :meth:`cosine`, :meth:`ve` or :meth:`named`.

    Attributes
    ----------
    kind : str
        ``"linear"``, ``"cosine"`` or ``"ve"``.
    t : ndarray, (T,)
        Continuous times :math:`(k + 1)/T`.
    alpha, sigma : ndarray, (T,)
        VP signal and noise scales, :math:`\alpha^2 + \sigma^2 = 1`, :math:`\sigma` increasing.
    scale : ndarray, (T,)
        :math:`c_k`: the schedule's own variable is :math:`c_k y_k` (1 for VP, :math:`\sqrt{1 + \varsigma_k^2}` for VE).
    """

    kind: str
    t: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    scale: np.ndarray

    @classmethod
    def linear(cls, num_timesteps: int = DEFAULT_NUM_TIMESTEPS, beta_min: float = 0.1, beta_max: float = 20.0):
        r"""VP with :math:`\beta(t) = \beta_{min} + t (\beta_{max} - \beta_{min})` (Song et al. 2021):
        :math:`\bar\alpha(t) = \exp(-\beta_{min} t - \tfrac12 (\beta_{max} - \beta_{min}) t^2)`.

        At :math:`T = 1000` this is Ho et al. (2020)'s ``linspace(1e-4, 0.02)`` betas
        (to :math:`O(\beta^2)`); for other :math:`T` the process is the same and only
        the grid changes, so the last timestep is pure noise whatever :math:`T` is.
        """
        num_timesteps = _check_int("num_timesteps", num_timesteps)
        beta_min, beta_max = _check_positive("beta_min", beta_min), _check_positive("beta_max", beta_max)
        if beta_max <= beta_min:
            raise ValueError(f"beta_max must exceed beta_min ({beta_min}), got {beta_max}")
        t = np.arange(1, num_timesteps + 1) / num_timesteps
        return cls._from_log_alpha_bar("linear", t, -(beta_min * t + 0.5 * (beta_max - beta_min) * t**2))

    @classmethod
    def cosine(cls, num_timesteps: int = DEFAULT_NUM_TIMESTEPS, offset: float = 0.008, max_beta: float = 0.999):
        r"""VP with :math:`\bar\alpha(t) = f(t)/f(0)`,
        :math:`f(t) = \cos^2\!\big(\tfrac{\pi}{2}\tfrac{t + s}{1 + s}\big)`, the per-step
        :math:`\beta_k = 1 - \bar\alpha_k/\bar\alpha_{k-1}` clipped at ``max_beta``
        so the last timestep keeps a tiny signal (Nichol & Dhariwal 2021)."""
        num_timesteps = _check_int("num_timesteps", num_timesteps)
        offset = _check_positive("offset", offset)
        max_beta = _check_positive("max_beta", max_beta)
        if max_beta >= 1:
            raise ValueError(f"max_beta must be < 1, got {max_beta}")
        grid = np.arange(0, num_timesteps + 1) / num_timesteps
        f = np.cos(0.5 * np.pi * (grid + offset) / (1 + offset)) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], max_beta)
        return cls._from_log_alpha_bar("cosine", grid[1:], np.cumsum(np.log1p(-betas)))

    @classmethod
    def ve(cls, num_timesteps: int = DEFAULT_NUM_TIMESTEPS, sigma_min: float = 0.01, sigma_max: float = 50.0):
        r"""Variance exploding: :math:`x_t = x_0 + \varsigma(t)\varepsilon`,
        :math:`\varsigma(t) = \varsigma_{min} (\varsigma_{max}/\varsigma_{min})^t` (Song & Ermon 2019;
        Song et al. 2021). ``sigma_max`` should reach the largest distance between
        (normalised) data points."""
        num_timesteps = _check_int("num_timesteps", num_timesteps)
        sigma_min, sigma_max = _check_positive("sigma_min", sigma_min), _check_positive("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min ({sigma_min}), got {sigma_max}")
        t = np.arange(1, num_timesteps + 1) / num_timesteps
        ve_sigma = sigma_min * (sigma_max / sigma_min) ** t
        scale = np.sqrt(1 + ve_sigma**2)
        return cls("ve", _frozen(t), _frozen(1 / scale), _frozen(ve_sigma / scale), _frozen(scale))

    @classmethod
    def named(cls, name: str, num_timesteps: int = DEFAULT_NUM_TIMESTEPS):
        """The schedule ``name`` (``"linear"``, ``"cosine"``, ``"ve"``) with its default parameters."""
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a Schedule, got {name!r}")
        return getattr(cls, name)(num_timesteps)

    @classmethod
    def _from_log_alpha_bar(cls, kind, t, log_alpha_bar):
        alpha = np.exp(0.5 * log_alpha_bar)
        sigma = np.sqrt(-np.expm1(log_alpha_bar))  # 1 - alpha_bar without cancellation near t = 0
        return cls(kind, _frozen(t), _frozen(alpha), _frozen(sigma), _frozen(np.ones_like(t)))

    @property
    def num_timesteps(self) -> int:
        return len(self.t)

    def __repr__(self) -> str:
        return f"Schedule({self.kind!r}, num_timesteps={self.num_timesteps})"

    def marginal(self, t):
        r"""``(alpha, sigma)`` of :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` in the schedule's
        own units (VE: ``alpha = 1``, ``sigma`` the VE noise level) at training times ``t``.

        ``t`` is a tensor (or array, or float) of grid times :math:`(k+1)/T`; the
        results have its type, shape and dtype. This is what an analytic score for
        :meth:`DiffusionModel.from_score` reads.
        """
        index = self.index_of(t)
        alpha, sigma = self.alpha * self.scale, self.sigma * self.scale
        if isinstance(t, torch.Tensor):
            as_tensor = lambda v: torch.as_tensor(v[index.cpu().numpy()], dtype=t.dtype, device=t.device)  # noqa: E731
            return as_tensor(alpha), as_tensor(sigma)
        return alpha[index], sigma[index]

    def index_of(self, t):
        """The training timestep ``k`` of grid times ``t = (k+1)/T``; a ValueError off the grid."""
        values = t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)
        position = values * self.num_timesteps
        index = np.round(position).astype(int) - 1
        if np.any(np.abs(position - index - 1) > 1e-6 * self.num_timesteps) or np.any(
            (index < 0) | (index >= self.num_timesteps)
        ):
            raise ValueError(f"t must be on the schedule's grid (k + 1) / {self.num_timesteps}, got {values!r}")
        return torch.as_tensor(index) if isinstance(t, torch.Tensor) else index

    def timesteps(self, num_steps: int | None = None, spacing: str = "trailing") -> TimestepTable:
        r"""The table of ``num_steps`` timesteps (all ``T`` by default), noisiest first.

        Spacings, as in diffusers (Lin et al. 2024 compare them), for ``T`` training
        timesteps and ``n`` steps:

        - ``"linspace"``: ``round(linspace(0, T - 1, n))``: both ends;
        - ``"leading"``: ``(T // n) * arange(n)``: starts below ``T - 1``, so the
          first step sees more signal than the N(0, I) start it is given;
        - ``"trailing"``: ``round(T - arange(n) * T / n) - 1``: starts at ``T - 1``.

        After the last of them the table goes to the clean end (:math:`\bar\alpha = 1`).
        """
        T = self.num_timesteps
        n = T if num_steps is None else _check_int("num_steps", num_steps)
        if n > T:
            raise ValueError(f"num_steps must be at most the schedule's num_timesteps ({T}), got {n}")
        if spacing == "linspace":
            index = np.round(np.linspace(0, T - 1, n))[::-1]
        elif spacing == "leading":
            index = (T // n) * np.arange(n)[::-1]
        elif spacing == "trailing":
            index = np.round(T - np.arange(n) * T / n) - 1
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        index = index.astype(int)
        index.setflags(write=False)
        return TimestepTable(
            index=index,
            t=_frozen(np.append(self.t[index], 0.0)),
            alpha=_frozen(np.append(self.alpha[index], 1.0)),
            sigma=_frozen(np.append(self.sigma[index], 0.0)),
            scale=_frozen(np.append(self.scale[index], 1.0)),
            spacing=spacing,
        )


ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DiffusionModel:
    r"""A diffusion model of ``dim``-dimensional data with an :math:`\varepsilon`-predicting network.

    .. math::

        y_t = \alpha_t x_0 + \sigma_t \varepsilon, \qquad
        \hat\varepsilon_\theta(y_t, t) \approx E[\varepsilon \mid y_t], \qquad
        \nabla_y \log p_t(y) = -\hat\varepsilon_\theta(y, t) / \sigma_t

    (Ho et al. 2020; Song et al. 2021), with :math:`x_0` the data after a per-dimension
    standardisation fitted when the model is first trained (``normalize=True``);
    its log-determinant :math:`-\sum_j \log s_j` is part of every density the model
    reports in the data's own units.

    Parameters
    ----------
    dim : int
        Dimension of a data point (images are flattened).
    schedule : {"cosine", "linear", "ve"} or Schedule
        The noise schedule (see :class:`Schedule`).
    num_timesteps : int, optional
        Training timesteps :math:`T` of a named schedule (default 1000); for a
        :class:`Schedule` it must match or be left out.
    net : torch.nn.Module, optional
        Any module mapping ``(y, t)`` -- ``y`` of shape ``(n, dim)``, ``t`` of shape
        ``(n,)`` holding continuous times :math:`(k+1)/T` in :math:`(0, 1]` -- to the
        noise prediction, shape ``(n, dim)``. ``y`` has unit scale at every noise
        level (the VP form above). Default: :class:`MLPDenoiser` with 3 hidden layers
        of 128 units, initialised from a fixed seed.
    normalize : bool
        Standardise each dimension by the training data's mean and standard deviation.

    Models are values: training returns a new model (``train_score_model(...).model``)
    and leaves this one as it was.

    Example
    -------
    >>> dm = DiffusionModel(dim=2, schedule="cosine", num_timesteps=1000)
    >>> dm.schedule.timesteps(4, "trailing").index.tolist()
    [999, 749, 499, 249]
    """

    def __init__(
        self,
        dim: int,
        schedule: "str | Schedule" = "cosine",
        num_timesteps: int | None = None,
        net: nn.Module | None = None,
        *,
        normalize: bool = True,
    ):
        self._dim = _check_int("dim", dim)
        self._schedule = _as_schedule(schedule, num_timesteps)
        if net is None:
            with torch.random.fork_rng():
                torch.manual_seed(_DEFAULT_NET_SEED)
                net = MLPDenoiser(self._dim)
        elif not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module mapping (y, t) to eps, got {type(net).__name__}")
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        self._net = _owned(net, self._dim, self._schedule).eval()
        self._score_fn: ScoreFn | None = None
        self._normalize = normalize
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    @classmethod
    def from_score(
        cls, score_fn: ScoreFn, dim: int, schedule: "str | Schedule" = "cosine", num_timesteps: int | None = None
    ) -> "DiffusionModel":
        r"""A model whose score is known in closed form, for samplers and likelihoods without training.

        ``score_fn(x, t)`` returns :math:`\nabla_x \log p_t(x)` of shape ``(n, dim)``, for
        ``x`` of shape ``(n, dim)`` in the data's own units and the schedule's own
        parametrisation (:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, VE included:
        :math:`\alpha_t = 1`), and ``t`` the continuous time, ``(n,)`` float64 on the
        grid :math:`(k+1)/T`. :meth:`Schedule.marginal` gives :math:`(\alpha_t, \sigma_t)` at
        those times. It is written in torch (``log_likelihood`` differentiates it)
        and called with float64 tensors. Internally
        :math:`\hat\varepsilon = -\sigma_t \nabla_x \log p_t(x)`.

        Example
        -------
        >>> schedule = Schedule.linear(1000)
        >>> def score(x, t):                       # data ~ N(0, I): p_t = N(0, I) under VP
        ...     return -x
        >>> dm = DiffusionModel.from_score(score, dim=2, schedule=schedule)
        """
        if not callable(score_fn):
            raise TypeError(f"score_fn must be a callable (x, t) -> score, got {type(score_fn).__name__}")
        model = cls.__new__(cls)
        model._dim = _check_int("dim", dim)
        model._schedule = _as_schedule(schedule, num_timesteps)
        model._net = None
        model._score_fn = score_fn
        model._normalize = False
        model._mean = model._std = None
        return model

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @property
    def num_timesteps(self) -> int:
        return self._schedule.num_timesteps

    @property
    def net(self) -> nn.Module | None:
        """The noise-prediction network (``None`` for a model built with :meth:`from_score`)."""
        return self._net

    @property
    def score_fn(self) -> ScoreFn | None:
        return self._score_fn

    @property
    def normalize(self) -> bool:
        return self._normalize

    @property
    def is_trained(self) -> bool:
        """Whether the model can be sampled: trained, or given an analytic score."""
        return self._score_fn is not None or self._mean is not None

    @property
    def mean(self) -> np.ndarray:
        """Per-dimension shift of the normalisation (zeros before training or without it)."""
        return np.zeros(self._dim) if self._mean is None else self._mean

    @property
    def std(self) -> np.ndarray:
        """Per-dimension scale of the normalisation (ones before training or without it)."""
        return np.ones(self._dim) if self._std is None else self._std

    @property
    def dtype(self) -> torch.dtype:
        """float64 for an analytic score, else the network's parameter dtype."""
        if self._net is None:
            return torch.float64
        return next(iter(self._net.parameters()), torch.empty(0)).dtype

    def log_det_normalization(self) -> float:
        r""":math:`\log |\det \partial z / \partial x| = -\sum_j \log s_j`: add it to a density of the
        normalised data to get the density in the data's units."""
        return -float(np.sum(np.log(self.std)))

    def normalized(self, x: np.ndarray) -> np.ndarray:
        """Data in the network's units: ``(x - mean) / std``."""
        return (np.asarray(x, float) - self.mean) / self.std

    def denormalized(self, z: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`normalized`."""
        return np.asarray(z, float) * self.std + self.mean

    def predict_noise(self, y: torch.Tensor, k: int) -> torch.Tensor:
        r""":math:`\hat\varepsilon(y, t_k)` for ``y`` (n, dim) in the VP form at training timestep ``k``."""
        schedule = self._schedule
        t = torch.full((y.shape[0],), float(schedule.t[k]), dtype=y.dtype, device=y.device)
        if self._score_fn is not None:
            scale = float(schedule.scale[k])
            out = -(float(schedule.sigma[k]) * scale) * self._score_fn(y * scale, t)
        else:
            out = self._net(y, t)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            source = "score_fn" if self._score_fn is not None else "net"
            raise ValueError(f"{source} must return a tensor of shape {tuple(y.shape)} (like its input), got {shape}")
        return out

    def replace(self, *, net: nn.Module, mean: np.ndarray, std: np.ndarray) -> "DiffusionModel":
        """A copy holding ``net`` (not copied again) and the normalisation ``mean``, ``std``."""
        model = copy.copy(self)
        model._net = _owned(net, self._dim, self._schedule).eval()
        model._mean, model._std = _frozen(mean), _frozen(std)
        return model

    def _config(self) -> tuple[dict, dict] | None:
        """What rebuilds this model from a saved Result: JSON-able arguments and a dict of
        tensors (the network's state dict, and the arrays of a schedule that is not a named
        one). None for an analytic score or a network of another class: those are code."""
        net_class = type(self._net).__name__
        if _NETS.get(net_class) is not type(self._net):
            return None
        tensors = {"net": self._net.state_dict()}
        if not _is_named(self._schedule):
            tensors["schedule"] = {name: torch.tensor(getattr(self._schedule, name)) for name in _SCHEDULE_ARRAYS}
        config = {
            "dim": self._dim,
            "schedule": {"kind": self._schedule.kind, "num_timesteps": self.num_timesteps},
            "net": {"class": net_class, **self._net._arguments()},
            "dtype": str(self.dtype).removeprefix("torch."),
            "normalize": self._normalize,
            "mean": None if self._mean is None else self._mean.tolist(),
            "std": None if self._std is None else self._std.tolist(),
        }
        return config, tensors

    @classmethod
    def _from_config(cls, config: dict, tensors: dict) -> "DiffusionModel":
        """The model :meth:`_config` describes, its network holding the saved weights."""
        kind = config["schedule"]["kind"]
        if "schedule" in tensors:
            schedule = Schedule(kind, *(_frozen(tensors["schedule"][name].numpy()) for name in _SCHEDULE_ARRAYS))
        else:
            schedule = Schedule.named(kind, config["schedule"]["num_timesteps"])
        arguments = dict(config["net"])
        with torch.random.fork_rng():  # initial weights, overwritten at once: the caller's RNG is left alone
            net = _NETS[arguments.pop("class")](**arguments)
        net = net.to(getattr(torch, config["dtype"]))
        net.load_state_dict(tensors["net"])
        model = cls(config["dim"], schedule, net=net, normalize=config["normalize"])
        if config["mean"] is None:
            return model
        # a trained network is frozen, as train_score_model returns it
        return model.replace(net=model.net.requires_grad_(False), mean=config["mean"], std=config["std"])

    def __repr__(self) -> str:
        source = "score_fn" if self._score_fn is not None else f"net={type(self._net).__name__}"
        state = "analytic" if self._score_fn is not None else ("trained" if self.is_trained else "untrained")
        return (
            f"DiffusionModel(dim={self._dim}, schedule={self._schedule.kind!r}, "
            f"num_timesteps={self.num_timesteps}, {source}, {state})"
        )


def _owned(net: nn.Module, dim: int, schedule: Schedule) -> nn.Module:
    """The network the model keeps: one of the default networks is checked and bound to the schedule."""
    if isinstance(net, MLPDenoiser | ConvDenoiser):
        if net.dim != dim:
            raise ValueError(f"net maps {net.dim}-dimensional points, the model has dim={dim}")
        return net.bound_to(schedule)
    return net


def _is_named(schedule: Schedule) -> bool:
    """Whether ``schedule`` is ``Schedule.named(kind, num_timesteps)``, which its name and size rebuild."""
    if schedule.kind not in SCHEDULES:
        return False
    named = Schedule.named(schedule.kind, schedule.num_timesteps)
    return all(np.array_equal(getattr(named, name), getattr(schedule, name)) for name in _SCHEDULE_ARRAYS)


def _as_schedule(schedule, num_timesteps) -> Schedule:
    if isinstance(schedule, Schedule):
        if num_timesteps is not None and num_timesteps != schedule.num_timesteps:
            raise ValueError(
                f"num_timesteps ({num_timesteps}) must match the Schedule's ({schedule.num_timesteps}) or be left out"
            )
        return schedule
    if not isinstance(schedule, str):
        raise TypeError(f"schedule must be one of {SCHEDULES} or a Schedule, got {type(schedule).__name__}")
    return Schedule.named(schedule, DEFAULT_NUM_TIMESTEPS if num_timesteps is None else num_timesteps)
