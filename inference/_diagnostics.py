"""``diagnose``: one report for every Result, with checks chosen by the groups present."""

import base64
import functools
import html
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import BUILTIN_CHECKS, Check, diagnostic_sites, importance_ratios
from ._result import Result, _arviz, result_attrs

_STATUS_ORDER = {"fail": 0, "warn": 1, "ok": 2}


@dataclass(frozen=True)
class Report:
    """The checks ``diagnose`` ran. ``ok`` is True when none failed."""

    checks: list[Check]
    idata: object = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; this report has {[c.name for c in self.checks]}")

    def _rows(self):
        return [(c.name, c.status, _fmt(c.value), _fmt(c.threshold), c.message) for c in self.checks]

    def __str__(self) -> str:
        header = ("check", "status", "value", "threshold", "message")
        rows = [header, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
        ]
        lines.insert(1, "-" * max(len(line) for line in lines))
        title = f"bayeskit diagnostics ({_method(self.idata)}): {'ok' if self.ok else 'FAILED'}"
        return "\n".join([title, *lines])

    def _table_html(self) -> str:
        colours = {"ok": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="color:{colours[row[1]]};font-weight:bold">{row[1]}</td>'
                if i == 1
                else f"<td>{html.escape(cell)}</td>"
                for i, cell in enumerate(row)
            )
            + "</tr>"
            for row in self._rows()
        )
        head = "".join(f"<th>{h}</th>" for h in ("check", "status", "value", "threshold", "message"))
        verdict = "all checks passed" if self.ok else "some checks failed"
        return (
            f"<p><b>bayeskit diagnostics ({html.escape(_method(self.idata))})</b>: {verdict}</p>"
            f'<table border="1" style="border-collapse:collapse">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def _repr_html_(self) -> str:
        return self._table_html()

    def to_html(self, path, *, title: str | None = None) -> Path:
        """Write the table and ArviZ plots (rank plots, k-hat, objective trace,
        posterior predictive) as one self-contained HTML file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figures = "".join(
            f"<h3>{html.escape(name)}</h3>" + (f'<img src="data:image/png;base64,{png}"/>' if png else "")
            for name, png in _figures(self.idata)
        )
        heading = html.escape(title or f"bayeskit report: {_method(self.idata)}")
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{heading}</title></head>"
            f"<body><h1>{heading}</h1>{self._table_html()}{figures}</body></html>"
        )
        return path


def diagnose(res_or_idata, *, reference=None) -> Report:
    """Run every check whose InferenceData groups are present.

    ``posterior`` gives ``r_hat`` (two or more chains), ``ess_bulk``, ``ess_tail`` and
    ``mcse``; ``sample_stats["diverging"]`` gives ``divergences``;
    ``sample_stats["log_p"]``/``["log_q"]`` give ``pareto_khat``; ``fit_trace`` gives
    ``objective_trace``; ``log_likelihood`` gives ``loo``; ``reference`` (draws keyed
    by site, a Result, or an array when the posterior has one variable) gives an
    energy-distance test; models add their own checks with ``register_check``.
    """
    if isinstance(res_or_idata, Result):
        idata = res_or_idata.to_inference_data()
    elif isinstance(res_or_idata, _arviz().InferenceData):
        idata = res_or_idata
    else:
        raise TypeError(f"diagnose takes a Result or an arviz.InferenceData, got {type(res_or_idata).__name__}")
    context = {"reference": reference}
    checks = [check for fn in BUILTIN_CHECKS for check in fn(idata, context)]
    checks.sort(key=lambda c: _STATUS_ORDER[c.status])
    return Report(checks=checks, idata=idata)


def _method(idata) -> str:
    return "" if idata is None else str(result_attrs(idata).get("method", ""))


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def _figures(idata):
    """(title, base64 PNG) for each plot the groups allow."""
    import matplotlib.pyplot as plt

    az = _arviz()
    plots = []

    def capture(title, draw):
        # the user's own figures stay open; only those drawn here are closed
        before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                draw()
            figure = plt.gcf()
            buffer = io.BytesIO()
            figure.tight_layout()
            figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            plots.append((title, base64.b64encode(buffer.getvalue()).decode()))
        except Exception as exc:  # a plot that cannot be drawn is reported, not fatal
            plots.append((f"{title} (not drawn: {type(exc).__name__}: {exc})", ""))
        finally:
            for number in set(plt.get_fignums()) - before:
                plt.close(number)

    if idata is None:
        return plots
    groups = idata.groups()
    if "posterior" in groups:
        names = diagnostic_sites(idata)[:6]
        coords = _first_entries(idata.posterior, names)
        kind = "rank_bars" if idata.posterior.sizes["chain"] > 1 else "trace"
        capture(
            "trace and rank plots",
            lambda: az.plot_trace(idata, var_names=names, coords=coords, kind=kind, compact=True),
        )
    log_ratio = importance_ratios(idata)
    if log_ratio is not None:
        capture("importance ratios log p - log q", lambda: _plot_ratios(plt, log_ratio))
    if "fit_trace" in groups:
        capture("objective trace", lambda: _plot_trace(plt, idata.fit_trace))
    if "posterior_predictive" in groups and "observed_data" in groups:
        capture("posterior predictive check", lambda: az.plot_ppc(idata, num_pp_samples=50))
    if "log_likelihood" in groups and "posterior" in groups:
        for site in list(idata.log_likelihood.data_vars)[:3]:
            capture(f"PSIS-LOO Pareto k of {site!r}", functools.partial(_plot_loo_khat, az, idata, site))
    return plots


def _first_entries(posterior, names, per_axis: int = 4) -> dict:
    """Coordinates keeping the first ``per_axis`` entries along each axis of the sites:
    rank plots of hundreds of components take minutes and cannot be read."""
    return {
        dim: posterior[dim].values[:per_axis]
        for name in names
        for dim in posterior[name].dims[2:]
        if posterior.sizes[dim] > per_axis
    }


def _plot_loo_khat(az, idata, site):
    az.plot_khat(az.loo(idata, pointwise=True, var_name=site))


def _plot_ratios(plt, log_ratio):
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(log_ratio - np.max(log_ratio), bins=50)
    ax.set_xlabel("log p - log q (shifted)")
    ax.set_ylabel("draws")


def _plot_trace(plt, trace):
    names = list(trace.data_vars)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = np.asarray(trace[name].values, float)
        ax.plot(values.T if values.ndim == 2 else values, lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("iteration")
