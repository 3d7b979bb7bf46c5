"""``robbins_monro`` against a hand-written torch SGD loop, the overhead of a generic Pyro
program, and SGLD against the MAP network on the digits, side by side in one run.

1. Steps per second of ``robbins_monro`` on ``BayesianMLP`` against a plain torch loop
   on the same network: ``nn.Sequential(Linear, ReLU, Linear)``, ``torch.optim.SGD``,
   the loss (MSE or cross-entropy) and its backward pass, the batches cut from
   ``torch.randperm`` epochs as ours are, and ``loss.item()`` recorded every step.
   Regression: ``BayesianMLP(10, (50,))`` on the diabetes data (442 rows, 10 features
   and the target standardised); classification: ``BayesianMLP(64, (50,), 10,
   likelihood="categorical")`` on the 8x8 digits (1797 images, pixels / 16). Batch 64.
   After a warm-up call, ours is timed as whole calls of 1 and ``STEPS_LONG`` steps;
   the steady-state rate is the difference of steps over the difference of times,
   which cancels the fixed cost of a call (validation, binding the program, the
   Result), reported separately as the time of a one-step call. The torch loop is
   timed over ``STEPS_LONG`` steps after ``STEPS_SHORT`` warm-up steps, right after ours.
   Ours runs plain SGD (``preconditioner=None``), the torch loop's algorithm, plus the
   iterate average it returns. Each pair is repeated ``REPEATS`` times; the rates are medians, and the ratio is the
   median of the pairs' ratios, with their range (on a shared machine the load drifts
   between repeats). Target: ours / torch >= 0.8.
2. The same regression network written as a plain Pyro function (one ``pyro.sample``
   per weight matrix and bias, the noise, and the likelihood in ``pyro.plate("data")``)
   through ``robbins_monro``: a generic program has no hand-written gradient, so every
   step traces the program and backpropagates through the trace. It runs plain SGD
   with a smaller step (``PYRO_STEP_SIZE_A``), since from the generic starting point
   plain SGD's default schedule diverges; the speed of a step does not depend on it. That the two
   programs are the same model is checked by their log joint densities at the same
   weights.
3. On the digits (random 70/30 split, seed 0): the MAP network (``robbins_monro``,
   ``MAP_STEPS`` steps) against SGLD (``sgld``, 4 chains, ``SGLD_WARMUP`` warm-up steps
   and 200 draws thinned by 10 each, default step-size schedule): test accuracy,
   expected calibration error (10 equal-width confidence bins), negative
   log-likelihood and mean confidence; SGLD's probabilities are the average of the
   softmax over all draws. Both prior scales, the default 1 and 3; default step sizes
   and preconditioner (RMSprop).

float32 everywhere (the torch default), CPU, one torch thread.
"""

import functools
import json
import math
import os
import statistics
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

BATCH, HIDDEN = 64, 50
STEPS_SHORT, STEPS_LONG, REPEATS = 200, 3000, 7
LEARNING_RATE = 0.02  # the torch loop's step; the speed of a step does not depend on it
# the generic program starts at uniform(-2, 2) in the unconstrained space, far out in the
# weights' prior; from there plain SGD's default schedule diverges within a few steps
PYRO_STEP_SIZE_A = 0.02
MAP_STEPS, SGLD_WARMUP, SGLD_CHAINS, SGLD_SAMPLES, THINNING = 5000, 2000, 4, 200, 10


def _pyro_step_size():
    from bayeskit.inference import RobbinsMonro

    return RobbinsMonro(a=PYRO_STEP_SIZE_A, b=1000.0, gamma=0.55)


def _diabetes():
    from bayeskit.models import data

    table = data.load("diabetes")
    X = np.column_stack([table[k] for k in table if k != "progression"])
    y = table["progression"]
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


def _digits():
    from bayeskit.models import data

    table = data.load("digits")
    X = np.asarray(table["images"], dtype=np.float32).reshape(-1, 64) / 16.0
    return torch.as_tensor(X), torch.as_tensor(table["target"]).long()


def _torch_loop(X, y, classify: bool, num_steps: int, warmup: int) -> float:
    """Steps per second of plain minibatch SGD on the same network, after ``warmup`` steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(X.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10 if classify else 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    generator = torch.Generator().manual_seed(0)
    losses = []

    def batches():
        while True:
            order = torch.randperm(len(X), generator=generator)
            for start in range(0, len(X) - BATCH + 1, BATCH):
                yield order[start : start + BATCH]

    stream = batches()
    started = None
    for t in range(warmup + num_steps):
        if t == warmup:
            started = time.perf_counter()
        index = next(stream)
        out = net(X[index])
        loss = loss_fn(out, y[index]) if classify else loss_fn(out.squeeze(-1), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    if not math.isfinite(losses[-1]):
        raise RuntimeError("the torch loop diverged")
    return num_steps / seconds


def _timed_call(fn, num_steps: int) -> float:
    started = time.perf_counter()
    fn(num_steps)
    return time.perf_counter() - started


def _rates(ours, X, y, classify: bool) -> dict:
    """Median steady-state steps/s of ``ours(num_steps)`` and of the torch loop, timed in
    adjacent pairs; the ratio is the median of the pairs' ratios, which cancels most of
    the drift in the machine's load."""
    ours(STEPS_SHORT)  # warm-up: imports, first tracing, allocator
    _torch_loop(X, y, classify, STEPS_SHORT, 0)
    steady, whole, fixed, anchor = [], [], [], []
    for _ in range(REPEATS):
        one = _timed_call(ours, 1)  # a call of one step: the fixed cost of a call
        long = _timed_call(ours, STEPS_LONG)
        steady.append((STEPS_LONG - 1) / (long - one))
        whole.append(STEPS_LONG / long)
        fixed.append(one)
        anchor.append(_torch_loop(X, y, classify, STEPS_LONG, STEPS_SHORT))
    ratios = [a / b for a, b in zip(steady, anchor, strict=True)]
    return {
        "ours_steps_per_s": statistics.median(steady),
        "ours_whole_call_steps_per_s": statistics.median(whole),
        "ours_fixed_cost_s": statistics.median(fixed),
        "torch_steps_per_s": statistics.median(anchor),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


def pyro_mlp(X, y=None):
    """``BayesianMLP(10, (50,))`` written as a plain Pyro program: the same priors and likelihood."""
    d = X.shape[1]
    w1 = pyro.sample("w1", dist.Normal(0.0, 1.0 / math.sqrt(d)).expand([HIDDEN, d]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(0.0, 1.0 / math.sqrt(HIDDEN)).expand([1, HIDDEN]).to_event(2))
    b2 = pyro.sample("b2", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    f = (torch.relu(X @ w1.T + b1) @ w2.T + b2).squeeze(-1)
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(f, sigma), obs=y)
    return f


def _same_density(net, X, y) -> dict:
    """Both programs' log joint densities at the same weights (a MAP of ``net``), the
    plain program's by tracing it with Pyro: the two networks are the same model."""
    from pyro import poutine

    from bayeskit.inference import robbins_monro

    res = robbins_monro(net, X, y, num_steps=STEPS_SHORT, batch_size=BATCH, progress=False)
    values = {k: torch.as_tensor(v) for k, v in res.params.items()}
    names = {"w1": "layers.0.weight", "b1": "layers.0.bias", "w2": "layers.1.weight", "b2": "layers.1.bias"}
    conditioned = poutine.condition(
        pyro_mlp, data={**{k: values[v] for k, v in names.items()}, "sigma": values["sigma"]}
    )
    with torch.no_grad():
        theirs = float(poutine.trace(conditioned).get_trace(X, y).log_prob_sum())
        ours = float(net.log_joint(values, X, y))
    return {"BayesianMLP.log_joint": ours, "pyro_trace_log_prob_sum": theirs}


def _speed() -> dict:
    from bayeskit.inference import robbins_monro
    from bayeskit.models import BayesianMLP

    # the torch loop's algorithm: plain SGD (and the iterate average ours returns)
    plain_sgd = functools.partial(robbins_monro, batch_size=BATCH, preconditioner=None, progress=False)
    out = {}
    X, y = _diabetes()
    net = BayesianMLP(10, (HIDDEN,))
    out["regression"] = _rates(lambda n: plain_sgd(net, X, y, num_steps=n), X, y, classify=False)
    out["pyro_program"] = _rates(
        lambda n: plain_sgd(pyro_mlp, X, y, num_steps=n, step_size=_pyro_step_size()),
        X,
        y,
        classify=False,
    )
    out["same_density"] = _same_density(net, X, y)
    X, y = _digits()
    clf = BayesianMLP(64, (HIDDEN,), 10, likelihood="categorical")
    out["classification"] = _rates(lambda n: plain_sgd(clf, X, y, num_steps=n), X, y, classify=True)
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    return float(
        sum(
            np.mean(bins == m) * abs(correct[bins == m].mean() - confidence[bins == m].mean())
            for m in range(n_bins)
            if np.any(bins == m)
        )
    )


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "accuracy": float(np.mean(probs.argmax(1) == labels)),
        "ece": expected_calibration_error(probs, labels),
        "nll": float(-np.mean(np.log(probs[np.arange(len(labels)), labels]))),
        "confidence": float(probs.max(1).mean()),
    }


def _calibration() -> list[dict]:
    from bayeskit.inference import robbins_monro, sgld
    from bayeskit.models import BayesianMLP

    X, y = _digits()
    order = np.random.default_rng(0).permutation(len(y))
    n_train = int(0.7 * len(y))
    train, test = order[:n_train], order[n_train:]
    X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test].numpy()
    rows = []
    for scale in (1.0, 3.0):
        clf = BayesianMLP(64, (HIDDEN,), 10, likelihood="categorical", prior_scale=scale)
        started = time.perf_counter()
        fit = robbins_monro(clf, X_train, y_train, num_steps=MAP_STEPS, batch_size=BATCH, progress=False)
        map_seconds = time.perf_counter() - started
        with torch.no_grad():
            point = {k: torch.as_tensor(v) for k, v in fit.params.items()}
            map_probs = torch.softmax(clf.predict(point, X_test), -1).numpy()
        started = time.perf_counter()
        res = sgld(
            clf,
            X_train,
            y_train,
            num_chains=SGLD_CHAINS,
            num_warmup=SGLD_WARMUP,
            num_samples=SGLD_SAMPLES,
            thinning=THINNING,
            batch_size=BATCH,
            progress=False,
        )
        sgld_seconds = time.perf_counter() - started
        draws = {
            k: torch.as_tensor(v.reshape(-1, *v.shape[2:]))
            for k, v in res.draws.items()
            if k in res.info["latent_sites"]
        }
        with torch.no_grad():
            probs = torch.softmax(clf.predict(draws, X_test), -1).numpy()
        per_chain = probs.reshape(SGLD_CHAINS, -1, *probs.shape[1:]).mean(1)
        rows.append({
            "prior_scale": scale,
            "map": {**_scores(map_probs, y_test), "seconds": map_seconds},
            "sgld": {**_scores(probs.mean(0), y_test), "seconds": sgld_seconds},
            "sgld_single_chain_accuracy": [_scores(p, y_test)["accuracy"] for p in per_chain],
            "sgld_max_split_r_hat": res.info["max_split_r_hat"],
            "sgld_gradient_noise_ratio": max(res.info["gradient_noise_ratio"]),
            "dtype": str(draws["layers.0.weight"].dtype),
        })  # fmt: skip
    return rows


def main() -> None:
    torch.set_num_threads(1)
    speed = _speed()
    print(
        f"\nrobbins_monro on BayesianMLP against a hand-written torch SGD loop, hidden=({HIDDEN},), batch {BATCH}, "
        f"dtype {torch.get_default_dtype()}, CPU, 1 torch thread ({os.cpu_count()} cores); torch {torch.__version__}, "
        f"pyro {pyro.__version__}"
    )
    print(
        f"  steady state from calls of 1 and {STEPS_LONG} steps; torch loop over {STEPS_LONG} steps "
        f"after {STEPS_SHORT} warm-up; medians of {REPEATS} adjacent pairs"
    )
    print(
        f"  {'':52}{'ours steps/s':>13}{'torch steps/s':>15}{'ours/torch':>12}{'range':>15}"
        f"{'whole call steps/s':>20}{'1-step call s':>15}"
    )
    lines = (
        ("diabetes regression, BayesianMLP(10, (50,))", speed["regression"]),
        ("digits, BayesianMLP(64, (50,), 10, categorical)", speed["classification"]),
        ("diabetes regression, plain Pyro program", speed["pyro_program"]),
    )
    for name, row in lines:
        low, high = row["ratio_range"]
        print(
            f"  {name:52}{row['ours_steps_per_s']:13.0f}{row['torch_steps_per_s']:15.0f}{row['ratio']:11.2f}x"
            f"{f'{low:.2f}-{high:.2f}':>15}{row['ours_whole_call_steps_per_s']:20.0f}{row['ours_fixed_cost_s']:15.3f}"
        )
    overhead = speed["regression"]["ours_steps_per_s"] / speed["pyro_program"]["ours_steps_per_s"]
    print(f"  a generic Pyro program takes {overhead:.1f}x the time per step of BayesianMLP's own gradient")
    density = speed["same_density"]
    print(
        f"  the Pyro program runs plain SGD with step_size=RobbinsMonro(a={PYRO_STEP_SIZE_A}, b=1000, gamma=0.55): "
        "from its generic starting point plain SGD's default schedule diverges (RMSprop, the default, does not)"
    )
    print(
        f"  same model: log joint at the same weights, BayesianMLP.log_joint {density['BayesianMLP.log_joint']:.4f}, "
        f"Pyro trace of the plain program {density['pyro_trace_log_prob_sum']:.4f}"
    )
    met = all(row["ratio"] >= 0.8 for _, row in lines[:2])
    print(f"  target: BayesianMLP >= 0.8x the torch loop: {'met' if met else 'NOT met'}")

    calibration = _calibration()
    print(
        f"\nDigits, 1257 train / 540 test, BayesianMLP(64, (50,), 10, categorical), batch {BATCH}, float32: "
        f"MAP by robbins_monro ({MAP_STEPS} steps) against sgld ({SGLD_CHAINS} chains x ({SGLD_WARMUP} warm-up + "
        f"{SGLD_SAMPLES} x {THINNING}) steps), default step sizes"
    )
    print(
        f"  {'prior_scale':>11}  {'method':6}{'accuracy':>10}{'ECE':>8}{'NLL':>8}{'confidence':>12}{'seconds':>9}"
        f"  single-chain accuracy, split R-hat (f_probe), gradient-noise ratio"
    )
    for row in calibration:
        for method in ("map", "sgld"):
            s = row[method]
            extra = ""
            if method == "sgld":
                chains = ", ".join(f"{a:.3f}" for a in row["sgld_single_chain_accuracy"])
                extra = f"  [{chains}], {row['sgld_max_split_r_hat']:.2f}, {row['sgld_gradient_noise_ratio']:.4f}"
            print(
                f"  {row['prior_scale']:11g}  {method.upper():6}{s['accuracy']:10.3f}{s['ece']:8.3f}{s['nll']:8.3f}"
                f"{s['confidence']:12.3f}{s['seconds']:9.1f}{extra}"
            )
    print("\n" + json.dumps({"speed": speed, "calibration": calibration}))


if __name__ == "__main__":
    main()
