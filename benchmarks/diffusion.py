"""Diffusion samplers on the 8-Gaussian ring: quality against network evaluations, and speed
against a hand-written loop with the same network, in one run.

1. Data: 8 Gaussians of standard deviation 0.5 on a circle of radius 4; 20,000 training
   points, 5,000 held out, and 5,000 more as a second true sample. Model: the default
   ``DiffusionModel(dim=2, schedule="cosine")`` (an MLP of 3 hidden layers of 128, time
   embedding, float32, CPU), trained by ``train_score_model`` for 3,000 steps of 256.
2. Quality: 5,000 draws per sampler and setting, energy distance to the held-out
   points (Székely & Rizzo 2013, every pair, both samples divided by the held-out
   points' per-coordinate standard deviation), against network evaluations (NFE).
   The floor is the distance between the two true samples; DDPM-1000, DDIM-50 and
   ODE-15 are run with three seeds to show the seed-to-seed spread. Targets: DDIM-50
   within DDPM-1000's spread; the ODE sampler matching DDIM-50 in at most 30 NFE.
3. Speed: 5,000 draws by DDPM-1000 and DDIM-50 with ``sample`` and with a plain loop
   (Ho et al. 2020's Algorithm 2; DDIM eta=0 on the same trailing timesteps) calling
   the same network, best of three interleaved runs each after a warm-up (the quality
   table's seconds are single runs); and, at equal quality,
   ``sample(method="ode", num_steps=15)`` (29 NFE) against the hand-written DDIM-50.
   Target: at least 1x the hand-written loop's draws per second.
"""

import math
import multiprocessing
import os
import time

import numpy as np

NUM_TRAIN, NUM_HELD_OUT, NUM_SAMPLES, NUM_TRAIN_STEPS = 20_000, 5_000, 5_000, 3_000
SEEDS = (0, 1, 2)
SPEED_REPEATS = 3
GRID = (  # (label, method, settings); the first of each with a seed spread
    ("DDPM-1000", "ddpm", {"num_steps": 1000}),
    ("DDPM-250", "ddpm", {"num_steps": 250}),
    ("DDPM-100", "ddpm", {"num_steps": 100}),
    ("DDIM-50", "ddim", {"num_steps": 50}),
    ("DDIM-20", "ddim", {"num_steps": 20}),
    ("DDIM-10", "ddim", {"num_steps": 10}),
    ("ODE-15 (Heun)", "ode", {"num_steps": 15}),
    ("ODE-25 (Heun)", "ode", {"num_steps": 25}),
    ("ODE-8 (Heun)", "ode", {"num_steps": 8}),
    ("SDE-1000 (Euler-Maruyama)", "sde", {"num_steps": 1000}),
    ("SDE-250", "sde", {"num_steps": 250}),
    ("SDE-250 + 1 corrector (PC)", "sde", {"num_steps": 250, "langevin_steps": 1}),
    ("Langevin 100 levels x 5", "langevin", {"num_steps": 100, "langevin_steps": 5}),
    ("Langevin 50 levels x 2", "langevin", {"num_steps": 50, "langevin_steps": 2}),
)
SPREAD = ("DDPM-1000", "DDIM-50", "ODE-15 (Heun)")


def _ring(n, rng, radius=4.0, scale=0.5):
    angle = 2 * np.pi * rng.integers(0, 8, n) / 8
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)] + scale * rng.normal(size=(n, 2))


def _data():
    rng = np.random.default_rng(0)
    return _ring(NUM_TRAIN, rng), _ring(NUM_HELD_OUT, rng), _ring(NUM_SAMPLES, rng)


def _mean_distance(a, b, chunk=1000) -> float:
    import scipy.spatial

    total = sum(scipy.spatial.distance.cdist(a[i : i + chunk], b).sum() for i in range(0, len(a), chunk))
    return total / (len(a) * len(b))


def energy_distance(x, y) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| over every pair, in units of ``y``'s standard deviation."""
    scale = y.std(0)
    x, y = x / scale, y / scale
    return 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)


def _hand_ddpm(net, alpha_bar, n, seed):
    """Ho et al. (2020), Algorithm 2, with sigma_t^2 = beta-tilde, as one would write it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    num_timesteps = len(alpha_bar)
    y = torch.randn(n, 2, generator=generator)
    with torch.no_grad():
        for k in reversed(range(num_timesteps)):
            eps = net(y, torch.full((n,), (k + 1) / num_timesteps))
            current, previous = alpha_bar[k], alpha_bar[k - 1] if k > 0 else 1.0
            beta = 1 - current / previous
            mean = (y - beta / math.sqrt(1 - current) * eps) / math.sqrt(1 - beta)
            noise = torch.randn(n, 2, generator=generator) if k > 0 else 0.0
            y = mean + math.sqrt(beta * (1 - previous) / (1 - current)) * noise
    return y.numpy()


def _hand_ddim(net, alpha_bar, n, seed, num_steps=50):
    """DDIM with eta = 0 on the trailing timesteps, as one would write it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    num_timesteps = len(alpha_bar)
    steps = np.round(num_timesteps - np.arange(num_steps) * num_timesteps / num_steps).astype(int) - 1
    y = torch.randn(n, 2, generator=generator)
    with torch.no_grad():
        for i, k in enumerate(steps):
            eps = net(y, torch.full((n,), (k + 1) / num_timesteps))
            current = alpha_bar[k]
            previous = alpha_bar[steps[i + 1]] if i + 1 < num_steps else 1.0
            x0 = (y - math.sqrt(1 - current) * eps) / math.sqrt(current)
            y = math.sqrt(previous) * x0 + math.sqrt(1 - previous) * eps
    return y.numpy()


def _run() -> dict:
    import torch

    from bayeskit.inference._diffusion import sample, train_score_model
    from bayeskit.models._diffusion import DiffusionModel

    train, held_out, second = _data()
    started = time.perf_counter()
    res = train_score_model(DiffusionModel(dim=2, schedule="cosine"), train, num_steps=NUM_TRAIN_STEPS, progress=False)
    train_seconds = time.perf_counter() - started
    model = res.model

    quality = []
    for label, method, settings in GRID:
        for seed in SEEDS if label in SPREAD else SEEDS[:1]:
            started = time.perf_counter()
            out = sample(model, NUM_SAMPLES, method=method, rng_key=seed, progress=False, **settings)
            seconds = time.perf_counter() - started
            distance = energy_distance(out.draws["x"][0], held_out)
            quality.append({"label": label, "seed": seed, "nfe": out.info["nfe"], "ed": distance, "seconds": seconds})

    net, alpha_bar = model.net, (model.schedule.alpha**2).tolist()

    def hand(loop):
        return lambda: model.denormalized(loop(net, alpha_bar, NUM_SAMPLES, 0))

    def ours(method, **settings):
        return lambda: sample(model, NUM_SAMPLES, method=method, rng_key=0, progress=False, **settings).draws["x"][0]

    contenders = {
        "hand DDPM-1000": hand(_hand_ddpm),
        "sample DDPM-1000": ours("ddpm", num_steps=1000),
        "hand DDIM-50": hand(_hand_ddim),
        "sample DDIM-50": ours("ddim", num_steps=50),
        "sample ODE-15 (29 NFE)": ours("ode", num_steps=15),
    }
    for function in contenders.values():
        function()  # warm-up
    # interleaved, so a busy spell on a shared machine slows every contender alike
    times = {name: [] for name in contenders}
    draws = {}
    for _ in range(SPEED_REPEATS):
        for name, function in contenders.items():
            started = time.perf_counter()
            draws[name] = function()
            times[name].append(time.perf_counter() - started)
    speed = {name: {"seconds": min(times[name]), "ed": energy_distance(draws[name], held_out)} for name in contenders}
    return {
        "train_seconds": train_seconds,
        "final_loss": res.info["final_loss"],
        "floor": energy_distance(second, held_out),
        "quality": quality,
        "speed": speed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_run)
    print(
        f"\nDiffusion samplers, 8-Gaussian ring (radius 4, sd 0.5): MLP 3x128, cosine schedule, T=1000, float32, "
        f"CPU ({os.cpu_count()} cores, torch {out['torch']} with {out['threads']} threads)"
    )
    print(
        f"  train_score_model: {NUM_TRAIN_STEPS:,} steps of 256 in {out['train_seconds']:.1f} s "
        f"(final loss {out['final_loss']:.3f})"
    )
    floor = out["floor"]
    print(f"  energy distance between two true samples of {NUM_SAMPLES:,}: {floor:.4f}")
    print(f"  {'sampler':32}{'NFE':>6}{'energy distance':>18}{'seconds':>10}{'draws/s':>10}")
    by_label = {}
    for row in out["quality"]:
        by_label.setdefault(row["label"], []).append(row)
    for label, rows in by_label.items():
        eds = [row["ed"] for row in rows]
        spread = f"{np.mean(eds):.4f} ± {np.std(eds):.4f}" if len(rows) > 1 else f"{eds[0]:.4f}"
        seconds = np.mean([row["seconds"] for row in rows])
        print(f"  {label:32}{rows[0]['nfe']:6d}{spread:>18}{seconds:10.2f}{NUM_SAMPLES / seconds:10.0f}")
    ddpm, ddim, ode = ([row["ed"] for row in by_label[label]] for label in SPREAD)
    ddpm_high = max(ddpm) + np.std(ddpm)
    print(
        f"  targets: DDIM-50 within DDPM-1000's seed spread (mean {np.mean(ddim):.4f} <= {ddpm_high:.4f}): "
        f"{'met' if np.mean(ddim) <= ddpm_high else 'NOT met'}; "
        f"ODE at 29 NFE matching DDIM-50 (mean {np.mean(ode):.4f} <= {np.mean(ddim) + np.std(ddim):.4f}): "
        f"{'met' if np.mean(ode) <= np.mean(ddim) + np.std(ddim) else 'NOT met'}"
    )
    speed = out["speed"]
    title = f"speed, {NUM_SAMPLES:,} draws, best of {SPEED_REPEATS} interleaved"
    print(f"\n  {title:52}{'seconds':>10}{'draws/s':>10}{'energy distance':>18}")
    for name, row in speed.items():
        print(f"  {name:52}{row['seconds']:10.2f}{NUM_SAMPLES / row['seconds']:10.0f}{row['ed']:18.4f}")
    pairs = (
        ("DDPM-1000, same algorithm", "hand DDPM-1000", "sample DDPM-1000"),
        ("DDIM-50, same algorithm", "hand DDIM-50", "sample DDIM-50"),
        ("equal quality: ODE-15 against hand DDIM-50", "hand DDIM-50", "sample ODE-15 (29 NFE)"),
    )
    for title, theirs, ours in pairs:
        ratio = speed[theirs]["seconds"] / speed[ours]["seconds"]
        print(f"  {title}: sample is {ratio:.2f}x the hand-written loop's draws per second")
