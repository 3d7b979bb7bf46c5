"""MAP estimate of a NumPyro program: L-BFGS on the constrained log density."""

import numpy as np

from ._keys import as_key
from ._optimize import lbfgs
from ._program import bind, require_numpyro
from ._result import Result
from ._validation import check_positive_int


def map_estimate(
    model, *args, rng_key=0, max_iter: int = 1000, backend=None, progress: bool = True, **kwargs
) -> Result:
    """Maximum a posteriori estimate of the latent sites of ``model(*args, **kwargs)``.

    Maximises the posterior density of the constrained parameters,
    :math:`\\hat\\theta = \\arg\\max_\\theta \\log p(\\theta, y)`, with L-BFGS run in
    NumPyro's unconstrained space. No Jacobian is added, so this is the mode of the
    density users write down (it is not invariant to reparameterisation, and differs
    from :func:`laplace`'s mode for constrained sites).

    Returns a Result with ``params`` (latent and deterministic sites at the mode),
    ``trace["loss"]`` (negative log joint per iteration) and ``info`` with
    ``n_iter`` and ``log_joint``.

    Example
    -------
    >>> res = map_estimate(model, X, y=y)            # doctest: +SKIP
    >>> res.params["w"]                              # doctest: +SKIP
    """
    require_numpyro(model, backend, "map_estimate")
    max_iter = check_positive_int("max_iter", max_iter)
    program = bind(model, args, kwargs, rng_key=as_key(rng_key), routine="map_estimate")
    position, run = lbfgs(
        program.neg_log_joint,
        program.init_position,
        max_iter=max_iter,
        progress=progress,
        desc="map_estimate",
    )
    loss = float(program.neg_log_joint(position))
    info = {"n_iter": int(run.n_iter), "log_joint": -loss, "latent_sites": list(program.latent_shapes)}
    if not np.isfinite(loss):
        info["warnings"] = ["the log joint is not finite at the returned point"]
    return Result(
        method="map",
        model=model,
        params={k: np.asarray(v) for k, v in program.constrain(position).items()},
        trace={"loss": run.trace["loss"]},
        converged=bool(run.converged) and np.isfinite(loss),
        info=info,
        observed_data=dict(program.observed),
    )
