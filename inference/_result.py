"""The one result type every pair returns, and its ArviZ / netCDF views.

ArviZ is touched here and in the diagnostics layer only, so moving to another
ArviZ major version changes two files.
"""

import dataclasses
import importlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

_DRAW_GROUPS = ("sample_stats", "log_likelihood", "posterior_predictive")
_GROUPS = ("params", "draws", "marginals", "trace", "info", "observed_data", *_DRAW_GROUPS)
_WEIGHTS_GROUP = "model_weights"  # a torch model's tensors: torch.save bytes, read with weights_only=True


def _arviz():
    # ArviZ prints a FutureWarning about its refactor on import; it is not ours to show.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@dataclass(frozen=True, repr=False)
class Result:
    """What every inference routine returns. Arrays are NumPy arrays only.

    Attributes
    ----------
    method : str
        The routine that produced it (``"laplace"``, ``"svi"``, ``"nuts"``, ...).
    model : object
        The fitted model or the program that was fitted; ``None`` after ``load``
        unless the model can be rebuilt.
    params : dict[str, ndarray]
        Point estimate (MAP, mode, EM fit) in the constrained space; ``{}`` if none.
    draws : dict[str, ndarray]
        ``(chain, draw, *shape)`` draws of every latent and deterministic site.
    marginals : dict[str, ndarray]
        Marginal tables (belief propagation, exact inference).
    trace : dict[str, ndarray]
        Per-iteration objective, ``(iteration,)`` or ``(chain, iteration, ...)``.
    converged : bool
        Whether the returned answer converged.
    info : dict
        JSON-serialisable details documented by each routine.
    sample_stats, log_likelihood, posterior_predictive : dict[str, ndarray]
        ``(chain, draw, ...)`` arrays for the matching InferenceData groups;
        ``sample_stats["log_p"]`` and ``["log_q"]`` carry importance ratios for
        approximations with a tractable density.
    observed_data : dict[str, ndarray]
        The observations the model was conditioned on.
    """

    method: str
    model: Any = None
    params: dict = field(default_factory=dict)
    draws: dict = field(default_factory=dict)
    marginals: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)
    converged: bool = True
    info: dict = field(default_factory=dict)
    sample_stats: dict = field(default_factory=dict)
    log_likelihood: dict = field(default_factory=dict)
    observed_data: dict = field(default_factory=dict)
    posterior_predictive: dict = field(default_factory=dict)
    # the class of a model that ``load`` could not rebuild, so its registered checks still run
    _model_class: str = field(default="", repr=False)

    def __post_init__(self):
        if not isinstance(self.method, str) or not self.method:
            raise TypeError(f"method must be the routine's name (a non-empty str), got {self.method!r}")
        if not isinstance(self.converged, bool | np.bool_):
            raise TypeError(f"converged must be a bool, got {self.converged!r}")
        for name in _GROUPS:
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict (empty if none), got {type(getattr(self, name)).__name__}")

    def __repr__(self) -> str:
        def shapes(group):
            return "{" + ", ".join(f"{k}: {np.shape(v)}" for k, v in group.items()) + "}"

        parts = [f"method={self.method!r}", f"converged={self.converged}"]
        for name in ("params", "draws", "marginals", "trace"):
            if getattr(self, name):
                parts.append(f"{name}={shapes(getattr(self, name))}")
        return f"Result({', '.join(parts)})"

    @property
    def num_chains(self) -> int:
        return int(np.shape(next(iter(self.draws.values())))[0]) if self.draws else 0

    def to_inference_data(self):
        """An ``arviz.InferenceData`` with every group this result has.

        The standard groups (posterior, sample_stats, log_likelihood, observed_data,
        posterior_predictive) come from ArviZ; ``fit_trace``, ``marginals`` and
        ``params`` are added where present. ``attrs`` name the method and the model
        class, which is how registered diagnostics find their results.
        """
        az = _arviz()
        attrs = {
            "method": self.method,
            "model_class": class_name(self.model) or self._model_class,
            "converged": int(bool(self.converged)),
            "info": json.dumps(_jsonable(self.info)),
        }
        state = _model_state(self.model)
        if state is not None:
            attrs["model_config"] = json.dumps(state[0])
        groups = {
            name: {k: np.asarray(v) for k, v in getattr(self, name).items()}
            for name in ("draws", "observed_data", *_DRAW_GROUPS)
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata = az.from_dict(
                posterior=groups.pop("draws") or None,
                **{k: v or None for k, v in groups.items()},
                attrs=attrs,
            )
            extra = {
                "fit_trace": _trace_dataset(self.trace),
                "marginals": _plain_dataset(self.marginals, "state"),
                "params": _plain_dataset(self.params, "dim"),
            }
            extra = {name: ds.assign_attrs(attrs) for name, ds in extra.items() if ds.data_vars}
            if extra:
                idata.add_groups(extra)
        if not idata.groups():
            idata.attrs.update(attrs)
        return idata

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """A coefficient table where the routine reported standard errors (estimate, se,
        z, two-sided p-value and the Wald interval at ``level``); otherwise ArviZ's
        summary of the draws, or a table of the point estimate if there are none."""
        if self.params and "standard_errors" in self.info:
            return _coefficient_table(self.params, self.info["standard_errors"], level)
        if self.draws:
            # one chain of iid draws: ArviZ warns (and logs) that R-hat needs two
            logger = logging.getLogger("arviz")
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    return _arviz().summary(self.to_inference_data(), group="posterior")
            finally:
                logger.setLevel(level)
        rows = {}
        for name, value in self.params.items():
            value = np.asarray(value)
            if value.ndim == 0:
                rows[name] = float(value)
            for index in np.ndindex(value.shape if value.ndim else ()):
                if value.ndim:
                    rows[f"{name}[{', '.join(map(str, index))}]"] = float(value[index])
        return pd.DataFrame({"estimate": pd.Series(rows, dtype=float)})

    def save(self, path) -> Path:
        """Write to one netCDF file (h5netcdf engine). No pickle: only arrays and JSON.

        A model that :meth:`load` can rebuild is written as its class and JSON
        arguments; a torch model's tensors (a ``DiffusionModel``'s network weights) go
        in a ``model_weights`` group as the bytes of ``torch.save`` of a state dict.
        """
        path = Path(path)
        idata = self.to_inference_data()
        state = _model_state(self.model)
        if state is not None and state[1]:
            import torch  # only a torch model has tensors: other results never import it

            buffer = io.BytesIO()
            torch.save(state[1], buffer)
            weights = xr.Dataset({"state_dict": (("byte",), np.frombuffer(buffer.getvalue(), np.uint8))})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a group outside ArviZ's schema
                idata.add_groups({_WEIGHTS_GROUP: weights})
        idata.to_netcdf(str(path), engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path) -> "Result":
        """Read a result written by :meth:`save`.

        ``model`` is rebuilt when it is one of bayeskit's models: a model dataclass (a
        GLM, a GaussianMixture, ...) from its class and arguments, holding the saved
        ``params``; a ``BayesianMLP`` from its arguments (its weights are the saved
        ``params`` and ``draws``); a ``DiffusionModel`` with an ``MLPDenoiser`` or
        ``ConvDenoiser`` network from its arguments, schedule, normalisation and the
        network's weights, read with ``torch.load(..., weights_only=True)``. Otherwise
        (an analytic score, a network of another class, a user's program) it is ``None``.
        """
        az = _arviz()
        idata = az.from_netcdf(str(path), engine="h5netcdf")
        attrs = result_attrs(idata)
        if "method" not in attrs:
            raise ValueError(f"{path} was not written by Result.save: it records no method")

        def group(name):
            if name not in idata.groups():
                return {}
            return {k: np.asarray(v.values) for k, v in idata[name].data_vars.items()}

        params = group("params")
        model = _rebuild_model(attrs, params, group(_WEIGHTS_GROUP).get("state_dict"))
        return cls(
            method=str(attrs["method"]),
            model=model,
            _model_class="" if model is not None else str(attrs.get("model_class", "")),
            params=params,
            draws=group("posterior"),
            marginals=group("marginals"),
            trace=group("fit_trace"),
            converged=bool(int(attrs["converged"])),
            info=json.loads(attrs["info"]),
            observed_data=group("observed_data"),
            **{name: group(name) for name in _DRAW_GROUPS},
        )


def _coefficient_table(params: dict, standard_errors: dict, level: float) -> pd.DataFrame:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    z_crit = scipy.stats.norm.ppf(0.5 + level / 2)
    rows = {}
    for name, se in standard_errors.items():
        value, se = np.asarray(params[name], float), np.asarray(se, float)
        for index in np.ndindex(value.shape):
            label = f"{name}[{', '.join(map(str, index))}]" if index else name
            rows[label] = (value[index], se[index])
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "se"])
    # a coefficient held at zero (se 0) has no test: NaN, not an infinite z
    table["z"] = table["estimate"] / table["se"].where(table["se"] > 0)
    table["p_value"] = 2 * scipy.stats.norm.sf(np.abs(table["z"]))
    percent = f"{100 * level:g}%"
    table[f"lower_{percent}"] = table["estimate"] - z_crit * table["se"]
    table[f"upper_{percent}"] = table["estimate"] + z_crit * table["se"]
    return table


def result_attrs(idata) -> dict:
    """The attrs a Result wrote (method, model_class, converged, info), wherever they sit."""
    for name in idata.groups():
        if "method" in idata[name].attrs:
            return dict(idata[name].attrs)
    return dict(idata.attrs)


def routine_info(idata, method: str) -> dict | None:
    """The ``info`` a Result of ``method`` wrote, or None for a result of another routine."""
    attrs = result_attrs(idata)
    return json.loads(attrs["info"]) if attrs.get("method") == method else None


def class_name(model) -> str:
    if model is None:
        return ""
    kind = model if isinstance(model, type) else type(model)
    if kind.__name__ == "function":
        return f"function {getattr(model, '__qualname__', '')}"
    return f"{kind.__module__}.{kind.__qualname__}"


def _model_state(model) -> tuple[dict, dict] | None:
    """What rebuilds one of bayeskit's models: its JSON-able arguments and a dict of the
    torch tensors it needs besides (a network's weights; mostly empty), or None for
    anything else.

    A model dataclass is described by its fields (fitted parameters travel in the
    params group). A torch model is not a dataclass: its class says what describes it
    with a ``_config()`` method and a ``_from_config(config, tensors)`` classmethod
    that rebuilds it; the class is found by its name, so torch is imported only for
    a torch model.
    """
    if _is_our_dataclass(model):
        config = {f.name: _encode(getattr(model, f.name)) for f in dataclasses.fields(model) if f.name != "params"}
        try:
            json.dumps(config)
        except TypeError:
            return None  # arguments that are objects (a GP's priors): not rebuilt on load
        return config, {}
    if type(model).__module__.startswith("bayeskit.models.") and hasattr(model, "_from_config"):
        return model._config()
    return None


def _is_our_dataclass(value) -> bool:
    return dataclasses.is_dataclass(value) and type(value).__module__.startswith("bayeskit.models")


def _our_class(name: str) -> type:
    """The class a saved file names: only bayeskit's, since loading calls it."""
    module, _, qualname = name.rpartition(".")
    if not f"{module}.".startswith("bayeskit.models."):
        raise ValueError(f"a saved result names the class {name!r}, which is not one of bayeskit's models")
    return getattr(importlib.import_module(module), qualname)


def _encode(value):
    """Arguments that are themselves bayeskit dataclasses (a basis) are written by class and fields."""
    if _is_our_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": class_name(value), **fields}
    return value


def _decode(value):
    if isinstance(value, dict) and "__class__" in value:
        fields = {k: _decode(v) for k, v in value.items() if k != "__class__"}
        return _our_class(value["__class__"])(**fields)
    return value


def _rebuild_model(attrs: dict, params: dict, weights: np.ndarray | None):
    if "model_config" not in attrs:
        return None
    config = json.loads(attrs["model_config"])
    kind = _our_class(str(attrs["model_class"]))
    if not dataclasses.is_dataclass(kind):
        return kind._from_config(config, {} if weights is None else _load_tensors(weights))
    model = kind(**{k: _decode(v) for k, v in config.items()})
    has_params = any(f.name == "params" for f in dataclasses.fields(model))
    return dataclasses.replace(model, params=params) if has_params and params else model


def _load_tensors(weights: np.ndarray) -> dict:
    import torch  # only a torch model saves tensors

    # weights_only: torch's restricted unpickler, which builds tensors and containers and nothing else
    return torch.load(io.BytesIO(weights.tobytes()), weights_only=True, map_location="cpu")


def _trace_dataset(trace: dict) -> xr.Dataset:
    data = {}
    for name, values in trace.items():
        values = np.asarray(values)
        dims = ("chain", f"{name}_iteration") if values.ndim >= 2 else (f"{name}_iteration",)
        dims += tuple(f"{name}_dim_{i}" for i in range(values.ndim - 2))
        data[name] = (dims, values)
    return xr.Dataset(data)


def _plain_dataset(values: dict, axis: str) -> xr.Dataset:
    return xr.Dataset(
        {name: ([f"{name}_{axis}_{i}" for i in range(np.ndim(v))], np.asarray(v)) for name, v in values.items()}
    )


def _jsonable(value):
    """Info dicts hold JSON values; NumPy and JAX scalars/arrays are converted."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        return array.tolist()
    raise TypeError(f"info values must be JSON-serialisable, got {type(value).__name__}")
