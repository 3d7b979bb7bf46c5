"""Diagnostics registered for diffusion models (``sample`` results).

The built-in checks already cover what diffusion results share with other
routines: ``reference`` (energy distance of ``draws["x"]`` to held-out data),
``pareto_khat`` (the ODE sampler as a proposal, from ``sample_stats``) and
``objective_trace`` (the training loss). What is particular to a diffusion
sampler is where it starts: every method draws its first state from N(0, I), which
is the model's marginal at the table's first timestep only if no signal is left
there. A table that starts below the last timestep (``spacing="leading"`` with
few steps; Lin et al. 2024) starts from the wrong distribution, whatever the
network. The check reads ``info``, so a saved and reloaded result is judged the same.
"""

import json

from ._checks import Check, register_check
from ._result import result_attrs

# KL(N(alpha x0, sigma^2 I) || N(0, I)) is about snr * E|x0|^2 / 2 = snr * dim / 2 for normalised data:
# 0.01 keeps it below 0.005 nats per dimension
START_SNR_MAX = 0.01
_SAMPLERS = ("ddpm", "ddim", "langevin", "sde", "ode")


def start_snr_check(idata, context) -> list[Check]:
    attrs = result_attrs(idata)
    if attrs.get("method") not in _SAMPLERS:
        return []
    info = json.loads(attrs["info"])
    snr = float(info["start_snr"])
    ok = snr <= START_SNR_MAX
    message = (
        f"signal-to-noise ratio alpha^2/sigma^2 at the first timestep ({info['timesteps'][0]}), "
        "which the N(0, I) start ignores"
    )
    if not ok:
        message += (
            f"; the draws start from the wrong distribution: use spacing='trailing' or more steps "
            f"(spacing={info['spacing']!r}, num_steps={info['num_steps']})"
        )
    return [Check("start_snr", "ok" if ok else "warn", snr, START_SNR_MAX, message)]


# by name: registering must not import torch
register_check("bayeskit.models._diffusion.DiffusionModel", start_snr_check)
