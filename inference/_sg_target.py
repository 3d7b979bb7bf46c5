"""A Pyro program with a data plate, seen as a minibatch estimate of its log posterior.

Stochastic-gradient routines need, at a position of the unconstrained latents and
a minibatch ``(X_b, y_b)`` of size B out of N,

.. math::

    \\log \\tilde p(z) = \\log p(T(z)) + \\log|J_T(z)| + \\frac{N}{B} \\sum_{i \\in b} \\log p(y_i \\mid X_i, T(z)),

an unbiased estimate of the log posterior density of :math:`z` (Robbins & Monro
1951; Welling & Teh 2011): only the sites inside the data plate are scaled, the
prior never is. Any program is evaluated by tracing it with the latent values
substituted; :class:`~bayeskit.models.BayesianMLP` supplies the same density
computed without tracing.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from torch.distributions.transforms import IndependentTransform, identity_transform

from bayeskit.models._bnn import BayesianMLP

from ._program import checked_observation

_INIT_RADIUS = 2.0  # uniform(-2, 2) in the unconstrained space, as Stan and NumPyro start


@dataclass(frozen=True, eq=False)
class Target:
    """The unnormalised log posterior of ``model`` over its unconstrained latent sites."""

    model: Callable
    shapes: dict[str, torch.Size]
    transforms: dict[str, torch.distributions.Transform]
    observed: dict[str, np.ndarray]  # the observed sites' values on all the data
    num_data: int
    density: Callable  # (constrained values, X_b, y_b, likelihood_scale) -> log joint
    init_values: Callable[[torch.Generator], dict]  # constrained starting values
    # (unconstrained values, X_b, y_b, likelihood_scale, jacobian) -> (log posterior, gradients
    # by site), for models that compute them faster than autograd; None: autograd
    value_and_grad_by_site: Callable | None
    # weights of a neural network are not identified (permuting hidden units leaves the
    # function unchanged), so chains are compared on what the network predicts
    identified: bool

    def unravel(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat unconstrained vector as a dict of views, one per site."""
        pieces = torch.split(position, [shape.numel() for shape in self.shapes.values()])
        return {name: piece.view(shape) for (name, shape), piece in zip(self.shapes.items(), pieces, strict=True)}

    def constrain(self, position: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.transforms[name](z) for name, z in self.unravel(position).items()}

    def log_posterior(self, position, X, y, *, likelihood_scale: float, jacobian: bool) -> torch.Tensor:
        """The minibatch estimate at the flat unconstrained ``position``, with the
        Jacobian of the constraining transforms when ``jacobian``."""
        unconstrained = self.unravel(position)
        values = {name: self.transforms[name](z) for name, z in unconstrained.items()}
        total = self.density(values, X, y, likelihood_scale)
        if jacobian:
            for name in self.constrained:
                z = unconstrained[name]
                total = total + self.transforms[name].log_abs_det_jacobian(z, values[name]).sum()
        return total

    def value_and_grad(self, position, X, y, *, likelihood_scale: float, jacobian: bool):
        """:meth:`log_posterior` and its gradient with respect to the flat ``position``."""
        if self.value_and_grad_by_site is None:
            position = position.detach().requires_grad_()
            value = self.log_posterior(position, X, y, likelihood_scale=likelihood_scale, jacobian=jacobian)
            return value.item(), torch.autograd.grad(value, position)[0]
        value, grads = self.value_and_grad_by_site(self.unravel(position), X, y, likelihood_scale, jacobian)
        return value, torch.cat([grads[name].reshape(-1) for name in self.shapes])

    @property
    def constrained(self) -> tuple[str, ...]:
        """Sites whose transform is not the identity (only they carry a Jacobian)."""
        return tuple(name for name, t in self.transforms.items() if not _is_identity(t))

    def init(self, generator: torch.Generator) -> torch.Tensor:
        values = self.init_values(generator)
        return torch.cat([self.transforms[name].inv(values[name]).reshape(-1) for name in self.shapes])


def bind_target(model, X, y, *, plate: str, routine: str) -> Target:
    """Trace ``model(X, y)`` once, check that its likelihood sits in ``plate`` of size
    ``len(X)``, and return its :class:`Target`."""
    if not callable(model):
        raise TypeError(f"model must be a Pyro program (a callable or a PyroModule), got {type(model).__name__}")
    try:
        trace = poutine.trace(model).get_trace(X, y)
    except Exception as exc:
        raise ValueError(f"{routine}: the model raised {type(exc).__name__} when run on X and y: {exc}") from exc
    latent, observed, in_plate = {}, {}, set()
    for name, site in trace.nodes.items():
        if not _is_density_site(site):
            continue
        if any(frame.name == plate for frame in site["cond_indep_stack"]):
            in_plate.add(name)
        if site["is_observed"]:
            observed[name] = checked_observation(name, site["value"].detach().numpy(), site["fn"].shape())
        else:
            latent[name] = site
    if not latent:
        raise ValueError(f"{routine} needs a model with latent sample sites; this one has none")
    if not observed:
        raise ValueError(f"{routine}: the model observed nothing; pass y so that model(X, y) conditions on it")
    frame = next((s for s in trace.nodes.values() if s["type"] == "sample" and s["name"] in in_plate), None)
    if frame is None:
        raise ValueError(
            f"{routine} needs the likelihood inside pyro.plate({plate!r}, X.shape[0]); no sample site of this "
            f"model is in a plate named {plate!r} (pass plate= to name yours)"
        )
    plate_size = next(f.size for f in frame["cond_indep_stack"] if f.name == plate)
    if plate_size != len(X):
        raise ValueError(f"{routine}: the plate {plate!r} has size {plate_size}, but X has {len(X)} rows")
    for name in latent:
        if name in in_plate:
            raise ValueError(
                f"{routine}: the latent site {name!r} is inside the data plate {plate!r}; per-data-point latents "
                "cannot be minibatched this way (marginalise them or move them out of the plate)"
            )
        if latent[name]["fn"].support.is_discrete:
            raise ValueError(f"{routine} handles continuous latent sites only; {name!r} is discrete")
    transforms = {name: biject_to(site["fn"].support) for name, site in latent.items()}
    shapes = {name: site["value"].shape for name, site in latent.items()}
    if isinstance(model, BayesianMLP):
        return Target(
            model,
            shapes,
            transforms,
            observed,
            len(X),
            model.log_joint,
            model.init_values,
            model.unconstrained_log_joint_and_grad,
            identified=False,
        )
    dtypes = {name: site["value"].dtype for name, site in latent.items()}

    def density(values, X_b, y_b, likelihood_scale):
        return _traced_log_joint(model, values, X_b, y_b, plate, likelihood_scale)

    def init_values(generator):
        return {
            name: transforms[name](
                (2 * torch.rand(shapes[name], generator=generator, dtype=dtypes[name]) - 1) * _INIT_RADIUS
            )
            for name in latent
        }

    return Target(model, shapes, transforms, observed, len(X), density, init_values, None, identified=True)


def _traced_log_joint(model, values, X, y, plate, likelihood_scale) -> torch.Tensor:
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(X, y)
    total = 0.0
    for site in trace.nodes.values():
        if not _is_density_site(site):
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            log_prob = log_prob * site["mask"]
        log_prob = site["scale"] * log_prob.sum()
        if any(frame.name == plate for frame in site["cond_indep_stack"]):
            log_prob = likelihood_scale * log_prob
        total = total + log_prob
    return total


def _is_identity(transform) -> bool:
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return transform == identity_transform


def _is_density_site(site) -> bool:
    """A sample site that contributes to the density (not a plate's subsample site)."""
    return site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("is_auxiliary")
