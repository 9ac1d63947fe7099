"""Typed sweep spec (``sweeps/*.yaml``), validated like experiment specs.

A sweep names a ``base`` experiment spec and the key paths of that spec to search::

    base: ../experiments/cpu/lstm_ptb.yaml     # relative to this file
    study: cpu_density
    storage: null                              # null = runs/sweeps/<study>/journal.log
    n_trials: 8
    timeout: null                              # seconds, null = none
    sampler: {type: tpe, seed: 0}              # tpe | random | cmaes | gp | grid (grid: {key: [values]})
    pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}
    objective: {metrics: [val_ppl]}            # or [val_ppl, density] / [val_ppl, train_flops]
    fixed: {train.epochs: 6}                   # overrides applied to every trial
    space:
      sparse.density: {type: float, low: 0.1, high: 0.8}
      sparse.death_rate: {type: float, low: 0.1, high: 0.9, condition: {sparse.enabled: true}}

Errors are :class:`SweepSpecError` naming the file, the key path and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

METRICS = ("val_ppl", "density", "train_flops")
Scalar = bool | int | float | str


class SweepSpecError(ValueError):
    """A bad sweep spec; the message names the file, the key path and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplerSpec(_Strict):
    """Optuna sampler; ``grid`` gives the values per key path for ``type: grid``."""

    type: Literal["tpe", "random", "cmaes", "gp", "grid"] = "tpe"
    seed: int | None = 0
    n_startup_trials: int | None = Field(default=None, ge=0)
    grid: dict[str, list[Scalar]] | None = None

    @model_validator(mode="after")
    def _grid_only_for_grid(self) -> SamplerSpec:
        if self.grid is not None and self.type != "grid":
            raise ValueError(f"'grid' is only allowed with type: grid (type is {self.type!r})")
        if self.n_startup_trials is not None and self.type not in ("tpe", "cmaes", "gp"):
            raise ValueError("'n_startup_trials' is only allowed with type tpe, cmaes or gp")
        return self


class PrunerSpec(_Strict):
    """Optuna pruner fed with ``val_ppl`` every epoch (steps are epochs)."""

    type: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    n_startup_trials: int = Field(default=3, ge=0)
    n_warmup_steps: int = Field(default=1, ge=0)
    min_resource: int | Literal["auto"] = 1
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


class ObjectiveSpec(_Strict):
    """What each trial returns: ``val_ppl`` (best validation perplexity) first, optionally a second metric."""

    metrics: list[Literal["val_ppl", "density", "train_flops"]] = ["val_ppl"]
    directions: list[Literal["minimize", "maximize"]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if not self.metrics or self.metrics[0] != "val_ppl":
            raise ValueError("metrics must start with val_ppl: [val_ppl], [val_ppl, density] or [val_ppl, train_flops]")
        if len(set(self.metrics)) != len(self.metrics) or len(self.metrics) > 2:
            raise ValueError("metrics: at most two distinct metrics, e.g. [val_ppl, density]")
        if self.directions is not None and len(self.directions) != len(self.metrics):
            raise ValueError(
                f"directions has {len(self.directions)} entries but metrics has {len(self.metrics)}"
            )
        return self

    @property
    def resolved_directions(self) -> list[str]:
        """All metrics are minimised unless ``directions`` says otherwise."""
        return list(self.directions) if self.directions is not None else ["minimize"] * len(self.metrics)


class ParamSpec(_Strict):
    """One searched key path: float/int (``low``, ``high``, ``log``, ``step``) or categorical (``choices``).

    ``condition`` ({key path: value}) makes it active only when every listed key equals the value; a
    key of the space is compared with its sampled value, any other key with the base spec's value.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Scalar] | None = None
    condition: dict[str, Scalar] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            bad = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if bad:
                raise ValueError(f"categorical takes only 'choices' and 'condition', not {bad}")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' is only for type: categorical (type is {self.type})")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"need finite low <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log: true' cannot be combined (Optuna forbids it)")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and float(value) != int(value):
                    raise ValueError(f"int needs integer {name}, got {value}")
        return self

    def sample_values(self) -> list[Any]:
        """Representative values used to check the base spec accepts this key: the ends or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [float(self.low), float(self.high)]  # type: ignore[arg-type]


class RetrySpec(_Strict):
    """Dead-worker detection: lease files on the journal, Optuna heartbeats on RDB storage (seconds)."""

    max_retry: int | None = Field(default=3, ge=0)
    lease_ttl_s: float = Field(default=120.0, gt=0)
    lease_refresh_s: float = Field(default=15.0, gt=0)
    heartbeat_interval_s: int = Field(default=30, ge=1)
    grace_period_s: int = Field(default=120, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RetrySpec:
        if self.lease_refresh_s >= self.lease_ttl_s:
            raise ValueError(f"lease_refresh_s ({self.lease_refresh_s}) must be below lease_ttl_s ({self.lease_ttl_s})")
        if self.heartbeat_interval_s >= self.grace_period_s:
            raise ValueError("heartbeat_interval_s must be below grace_period_s")
        return self


_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEY_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SweepSpec(_Strict):
    """A validated sweep; ``base`` is resolved against the sweep file's folder by :func:`load_sweep`."""

    base: Path
    study: str
    storage: str | None = None
    n_trials: int = Field(ge=1)
    timeout: float | None = Field(default=None, gt=0)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec | None = None
    objective: ObjectiveSpec = ObjectiveSpec()
    fixed: dict[str, Any] = {}
    space: dict[str, ParamSpec]
    retry: RetrySpec = RetrySpec()
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("study")
    @classmethod
    def _study_name(cls, value: str) -> str:
        if not _STUDY_NAME.match(value):
            raise ValueError("study names use letters, digits, '_', '.', '-' (they become folder names)")
        return value

    @field_validator("space")
    @classmethod
    def _space_keys(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not value:
            raise ValueError("space needs at least one key path, e.g. sparse.density: {type: float, low: 0.1, high: 0.8}")
        for key in value:
            if not _KEY_PATH.match(key):
                raise ValueError(f"{key!r} is not a key path like 'sparse.density'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        multi = len(self.objective.metrics) > 1
        if multi and self.pruner is not None and self.pruner.type != "none":
            raise ValueError(
                "pruner: Optuna cannot prune multi-objective studies "
                f"(objective.metrics = {self.objective.metrics}); set pruner: {{type: none}} or drop the second metric"
            )
        for key in self.fixed:
            if key in self.space:
                raise ValueError(f"fixed: {key!r} is also in space; a key is either fixed or searched")
        for key, param in self.space.items():
            for cond_key in (param.condition or {}):
                if cond_key == key:
                    raise ValueError(f"space[{key}].condition refers to the key itself")
        order_space(self.space)  # raises on cycles
        if self.sampler.type == "grid":
            grid_values(self)  # raises if a key has no grid
        if self.sampler.type in ("cmaes", "gp") and any(p.condition for p in self.space.values()):
            pass  # allowed: Optuna samples conditional keys with the independent sampler
        return self

    @property
    def resolved_pruner(self) -> PrunerSpec:
        """Median for single-objective sweeps, none for multi-objective ones, unless given."""
        if self.pruner is not None:
            return self.pruner
        return PrunerSpec(type="none" if len(self.objective.metrics) > 1 else "median")

    @property
    def multi_objective(self) -> bool:
        return len(self.objective.metrics) > 1


def order_space(space: Mapping[str, ParamSpec]) -> list[str]:
    """Key paths in an order where every condition on a space key comes after that key (raises on cycles)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str, stack: tuple[str, ...]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise ValueError(f"space: conditions form a cycle: {' -> '.join((*stack, key))}")
        state[key] = 1
        for dep in (space[key].condition or {}):
            if dep in space:
                visit(dep, (*stack, key))
        state[key] = 2
        order.append(key)

    for key in space:
        visit(key, ())
    return order


def grid_values(sweep: SweepSpec) -> dict[str, list[Any]]:
    """Grid per key path for ``sampler.type: grid``: ``sampler.grid`` or the choices / int steps of the space."""
    given = dict(sweep.sampler.grid or {})
    for key in given:
        if key not in sweep.space:
            raise ValueError(f"sampler.grid[{key}]: not a key of space (space keys: {sorted(sweep.space)})")
    out: dict[str, list[Any]] = {}
    for key, param in sweep.space.items():
        if key in given:
            out[key] = list(given[key])
        elif param.type == "categorical":
            out[key] = list(param.choices or [])
        elif param.type == "int" and not param.log:
            step = int(param.step or 1)
            out[key] = list(range(int(param.low), int(param.high) + 1, step))  # type: ignore[arg-type]
        else:
            raise ValueError(f"sampler.grid[{key}]: a {param.type} key needs explicit grid values for type: grid")
        if not out[key]:
            raise ValueError(f"sampler.grid[{key}]: empty grid")
    return out


def grid_size(sweep: SweepSpec) -> int:
    """Number of points of the grid (product over keys)."""
    size = 1
    for values in grid_values(sweep).values():
        size *= len(values)
    return size


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if i > 0 and loc[i - 1] in ("space", "fixed", "grid") and isinstance(item, str):
            parts[-1] = f"{parts[-1]}[{item}]"
        elif isinstance(item, int):
            parts.append(f"[{item}]") if not parts else parts.__setitem__(-1, f"{parts[-1]}[{item}]")
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    msg = str(error.get("msg", ""))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """For an unknown key: the keys allowed at that place."""
    node: Any = model
    for item in loc[:-1]:
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(item, str):
            field = node.model_fields.get(item)
            if field is None:
                return ""
            annotation = field.annotation
            node = _model_in(annotation)
            if node is None:
                return ""
        elif node is ParamSpec or item is None:
            continue
    if isinstance(node, type) and issubclass(node, BaseModel):
        return f" (allowed: {', '.join(k for k in node.model_fields if k != 'path')})"
    return ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        # skip the union/tag noise pydantic adds for Literal/union members
        text = f"{path}: {_loc(loc)}: {_describe(error)}"
        if error.get("type") == "extra_forbidden":
            text += _allowed(SweepSpec, loc)
        if text not in lines:
            lines.append(text)
    return "\n".join(lines)


def parse_sweep(data: Any, path: Path) -> SweepSpec:
    """Validate a mapping read from ``path`` (``base`` resolved relative to the file's folder)."""
    if not isinstance(data, dict):
        raise SweepSpecError(f"{path}: (top level): a sweep spec is a mapping with base, study, n_trials, space")
    try:
        sweep = SweepSpec.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise SweepSpecError(_format_validation(path, exc)) from None
    base = sweep.base if sweep.base.is_absolute() else (path.parent / sweep.base)
    if not base.is_file():
        raise SweepSpecError(f"{path}: base: experiment spec {base} does not exist")
    return sweep.model_copy(update={"base": base})


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate ``path`` (structure only; see :func:`check_against_base` for key paths)."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: sweep spec not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepSpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_sweep(data, path)


SpecCheck = Callable[[Path, Mapping[str, Any]], None]
"""Validates ``base`` with overrides {key path: value} through the experiment spec; raises ``ValueError``."""


def check_against_base(sweep: SweepSpec, check: SpecCheck) -> None:
    """Prove every key path exists in the experiment spec by validating samples of the space.

    First ``fixed`` alone, then each key at each representative value (ends of the range, every
    choice) together with its condition keys set to their required values. Raises
    :class:`SweepSpecError` naming the sweep file and ``fixed`` / ``space[<key>]``.
    """
    path = sweep.path or Path("<sweep>")
    try:
        check(sweep.base, dict(sweep.fixed))
    except ValueError as exc:
        raise SweepSpecError(f"{path}: fixed: the base spec {sweep.base} rejects these overrides:\n  {exc}") from None
    for key, param in sweep.space.items():
        for value in param.sample_values():
            overrides = dict(sweep.fixed)
            overrides.update(param.condition or {})
            overrides[key] = value
            try:
                check(sweep.base, overrides)
            except ValueError as exc:
                raise SweepSpecError(
                    f"{path}: space[{key}]: the base spec {sweep.base} rejects {key}={value!r}"
                    f"{' with ' + str(param.condition) if param.condition else ''}:\n  {exc}"
                ) from None
    if sweep.sampler.type == "grid":
        for key, values in grid_values(sweep).items():
            for value in values:
                overrides = {**sweep.fixed, **(sweep.space[key].condition or {}), key: value}
                try:
                    check(sweep.base, overrides)
                except ValueError as exc:
                    raise SweepSpecError(f"{path}: sampler.grid[{key}]: the base spec rejects {value!r}:\n  {exc}") from None
