"""Typed experiment specs: YAML files -> validated, resolved `Spec` objects.

One schema with the defaults in one place (the field defaults below and `MODEL_DEFAULTS`), names that
mirror the original `main.py` / `main_ONLSTM.py` flags. Rules (each tested):

- YAML is read with `yaml.safe_load` semantics only; explicit YAML tags (`!!python/...`, `!foo`) and
  duplicate keys are errors.
- `base: other.yaml` (relative to the file) is inherited key by key, recursively; cycles are errors.
  In a child, `key: null` replaces the inherited value by null; for a whole section (`sparse: null`)
  that means "back to the section's defaults". `name` is never inherited: it is the file's own `name`
  or else the file's stem.
- Unknown keys, wrong types, out-of-range values and cross-field conflicts raise `SpecError`, whose
  message names the file that set the key, the key path and what is allowed, e.g.
  ``experiments/x.yaml: sparse.density: must be in (0, 1], got 1.5``.
- No dead flags: a key that the chosen model type, optimizer or sparse mode does not use must keep its
  default (e.g. `model.chunk_size` with `model.type: lstm`, any sparse key with `sparse.enabled: false`).
- `--set key.path=value` overrides are parsed with YAML scalar rules; unknown key paths are errors.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "SpecError",
    "Spec",
    "DataSpec",
    "ModelSpec",
    "SparseSpec",
    "OptimSpec",
    "TrainSpec",
    "TrackingSpec",
    "WandbSpec",
    "MODEL_DEFAULTS",
    "load_spec",
    "spec_from_dict",
    "spec_with",
    "parse_override",
    "save_spec",
]


class SpecError(ValueError):
    """A spec could not be read or validated. The message names the file, the key path and what is allowed."""


# ------------------------------------------------------------------------------------------------
# Defaults that depend on the model type (from the original scripts: SR `main.py` for lstm/rhn,
# SR `ONLSTM/main_ONLSTM.py` for onlstm, zihangdai/mos `main.py` for mos). A model key that is not
# listed for a type is not used by that type and must stay unset (no dead flags).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm": {"emsize": 1500, "nhid": 1500, "nlayers": 2, "dropout": 0.65, "tied": False},
    "rhn": {"emsize": 1500, "nhid": 1500, "nlayers": 2, "dropout": 0.65, "tied": False,
            "dropouth": 0.25, "dropouti": 0.65, "dropoute": 0.2, "recurrence_depth": 10, "couple": False},
    "onlstm": {"emsize": 400, "nhid": 1150, "nlayers": 3, "dropout": 0.4, "tied": True,
               "dropouth": 0.25, "dropouti": 0.5, "dropoute": 0.1, "wdrop": 0.4, "chunk_size": 10},
    "mos": {"emsize": 400, "nhid": 1150, "nlayers": 3, "dropout": 0.4, "tied": True,
            "dropouth": 0.3, "dropouti": 0.65, "dropoute": 0.1, "wdrop": 0.5, "nhidlast": None,
            "n_experts": 10, "dropoutl": None},
}
# Models whose training loss carries AR/TAR (AWD style). The others return a zero regularizer.
_AR_TAR_MODELS = {"onlstm": (2.0, 1.0), "mos": (2.0, 1.0)}
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _float_from_str(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads `1e-3` (no dot) as a string; accept it as the number it means."""
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _floats(cls, value: Any, info) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and "float" in repr(field.annotation):
            value = _float_from_str(value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"@: must be a finite number, got {value}")
        return value


def _fail(path: str, message: str) -> None:
    raise ValueError(f"@{path}: {message}")


def _check_unit(path: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        _fail(path, f"must be in [0, 1), got {value}")


class DataSpec(_Section):
    """Corpus and batching (spec §6, §9). Token caps slice the corpora for CPU-scale runs and tests."""

    corpus: Literal["ptb", "wikitext2"] = "ptb"
    dir: str | None = None
    batch_size: int = 20
    eval_batch_size: int = 20
    test_batch_size: int | None = None  # null = eval_batch_size (SR main.py); ON-LSTM and MoS use 1
    bptt: int = 35
    variable_bptt: bool = False  # AWD rule, spec §6.3
    max_seq_len_delta: int | None = None  # cap seq_len at bptt + delta (MoS: 20); null = no cap
    max_train_tokens: int | None = None
    max_valid_tokens: int | None = None
    max_test_tokens: int | None = None

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        for key in ("batch_size", "eval_batch_size", "test_batch_size", "bptt", "max_train_tokens",
                    "max_valid_tokens", "max_test_tokens"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                _fail(key, f"must be a positive integer, got {value}")
        if self.max_seq_len_delta is not None:
            if self.max_seq_len_delta < 0:
                _fail("max_seq_len_delta", f"must be >= 0 or null, got {self.max_seq_len_delta}")
            if not self.variable_bptt:
                _fail("max_seq_len_delta", "only used with variable_bptt: true; remove it or set variable_bptt")
        if self.test_batch_size is None:
            self.test_batch_size = self.eval_batch_size
        for split, batch in (("train", "batch_size"), ("valid", "eval_batch_size"), ("test", "test_batch_size")):
            cap, rows = getattr(self, f"max_{split}_tokens"), getattr(self, batch)
            if cap is not None and cap < 2 * rows:  # batchify needs 2 rows: one input/target pair per column
                _fail(f"max_{split}_tokens", f"must be at least 2 x {batch} ({2 * rows}) tokens, got {cap}")
        return self


class ModelSpec(_Section):
    """Model type and sizes (spec §6.1-6.4). Unset keys take the type's default from `MODEL_DEFAULTS`."""

    type: Literal["lstm", "rhn", "onlstm", "mos"] = "lstm"
    emsize: int | None = None
    nhid: int | None = None
    nlayers: int | None = None
    dropout: float | None = None
    tied: bool | None = None
    dropouth: float | None = None
    dropouti: float | None = None
    dropoute: float | None = None
    wdrop: float | None = None
    recurrence_depth: int | None = None
    couple: bool | None = None
    chunk_size: int | None = None
    nhidlast: int | None = None
    n_experts: int | None = None
    dropoutl: float | None = None

    def used_keys(self) -> list[str]:
        """Keys (besides `type`) that this model type reads."""
        return list(MODEL_DEFAULTS[self.type])

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `build_model(type, vocab_size, **options)`: only the keys this type uses."""
        return {key: getattr(self, key) for key in self.used_keys()}

    @model_validator(mode="after")
    def _resolve(self) -> ModelSpec:
        defaults = MODEL_DEFAULTS[self.type]
        for key in type(self).model_fields:
            if key == "type":
                continue
            if key not in defaults:
                if getattr(self, key) is not None:
                    users = sorted(t for t, d in MODEL_DEFAULTS.items() if key in d)
                    _fail(key, f"not used by model type {self.type} (only by {', '.join(users)}); remove it")
            elif getattr(self, key) is None:
                setattr(self, key, defaults[key])
        if self.type == "mos":  # MoS main.py: nhidlast < 0 -> emsize, dropoutl < 0 -> dropouth
            self.nhidlast = self.emsize if self.nhidlast is None else self.nhidlast
            self.dropoutl = self.dropouth if self.dropoutl is None else self.dropoutl
        for key in ("emsize", "nhid", "nlayers", "recurrence_depth", "chunk_size", "nhidlast", "n_experts"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                _fail(key, f"must be a positive integer, got {value}")
        for key in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop", "dropoutl"):
            value = getattr(self, key)
            if value is not None:
                _check_unit(key, value)
        if self.tied and self.type in ("lstm", "rhn") and self.emsize != self.nhid:
            _fail("tied", f"tied weights need emsize == nhid for {self.type}, got emsize {self.emsize}, "
                          f"nhid {self.nhid}")
        if self.type == "onlstm":
            if not self.tied:
                _fail("tied", "ON-LSTM always ties embedding and softmax (main_ONLSTM.py); must be true")
            for key in ("nhid", "emsize"):  # the last layer's width is emsize (tied)
                if getattr(self, key) % self.chunk_size:
                    _fail("chunk_size", f"must divide {key} ({getattr(self, key)}), got {self.chunk_size}")
        return self


class SparseSpec(_Section):
    """Dynamic sparse training (spec §2-4). Defaults are the Selfish-RNN ones (SR `add_sparse_args`)."""

    enabled: bool = False
    init: Literal["uniform", "ER", "ERK"] = "uniform"
    density: float = 0.33
    death: Literal["magnitude", "magnitude_rnn", "SET", "threshold"] = "magnitude"
    growth: Literal["random", "random_rnn", "gradient", "momentum"] = "random"
    redistribution: Literal["none", "magnitude", "nonzeros", "momentum"] = "none"
    death_rate: float = 0.5
    death_rate_min: float = 0.005
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    update_every: Literal["epoch"] | int = "epoch"
    growth_count: Literal["bernoulli", "exact"] = "bernoulli"
    include: list[str] | None = None
    exclude: list[str] | None = None
    update_in_switch_epoch: bool = False  # false = original: no update in the SGD->ASGD epoch (spec §10.7)

    @model_validator(mode="after")
    def _check(self) -> SparseSpec:
        if not self.enabled:
            defaults = SparseSpec.model_construct()
            for key in type(self).model_fields:
                if key != "enabled" and getattr(self, key) != getattr(defaults, key):
                    _fail(key, "sparse keys must keep their defaults when sparse.enabled is false "
                               "(no dead flags); set enabled: true or remove it")
            return self
        if not (0.0 < self.density <= 1.0):
            _fail("density", f"must be in (0, 1], got {self.density}")
        _check_unit("death_rate", self.death_rate)
        _check_unit("death_rate_min", self.death_rate_min)
        if self.decay == "constant":
            if self.death_rate_min != SparseSpec.model_fields["death_rate_min"].default:
                _fail("death_rate_min", "not used with decay: constant; remove it")
        elif self.death_rate < self.death_rate_min:
            _fail("death_rate", f"must be >= death_rate_min ({self.death_rate_min}) with decay: {self.decay} "
                                "(the schedule would rise); use decay: constant for a static mask")
        if isinstance(self.update_every, int) and self.update_every <= 0:
            _fail("update_every", f"must be 'epoch' or a positive number of steps, got {self.update_every}")
        if self.growth_count != "bernoulli" and self.growth not in ("random", "random_rnn"):
            _fail("growth_count", f"only used by random growth, not by growth: {self.growth}; remove it")
        return self


class OptimSpec(_Section):
    """Optimizer (spec §5): SGD with the non-monotone switch to SNT-ASGD, or Adam as in SR main.py."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float | None = None  # null = 15 for sgd (SR default), 1e-3 for adam (SR ignores --lr for Adam)
    clip: float = 0.25
    wdecay: float = 1.2e-6
    nonmono: int = 5
    momentum: float = 0.0  # SR's SGD has none (its --momentum flag is unused)
    asgd: bool | None = None  # null = true for sgd (NT-ASGD switch), false for adam
    alpha: float | None = None  # AR; null = 2 for onlstm/mos, 0 otherwise
    beta: float | None = None  # TAR; null = 1 for onlstm/mos, 0 otherwise
    finetuning: list[int] = Field(default_factory=list)  # epochs at which ASGD averages restart (ON-LSTM)
    when: list[int] = Field(default_factory=list)  # epochs at which lr is divided by 10 (AWD)

    @model_validator(mode="after")
    def _check(self) -> OptimSpec:
        if self.lr is None:
            self.lr = 15.0 if self.name == "sgd" else 1e-3
        if self.asgd is None:
            self.asgd = self.name == "sgd"
        if self.lr <= 0:
            _fail("lr", f"must be > 0, got {self.lr}")
        if self.clip < 0:
            _fail("clip", f"must be >= 0 (0 = no clipping), got {self.clip}")
        if self.wdecay < 0:
            _fail("wdecay", f"must be >= 0, got {self.wdecay}")
        if self.nonmono <= 0:
            _fail("nonmono", f"must be a positive integer, got {self.nonmono}")
        _check_unit("momentum", self.momentum)
        if self.name == "adam":
            if self.asgd:
                _fail("asgd", "the NT-ASGD switch needs name: sgd; with adam it must be false")
            if self.momentum:
                _fail("momentum", "not used by adam (betas are (0, 0.999) as in SR main.py); remove it")
        if not self.asgd:
            if self.nonmono != OptimSpec.model_fields["nonmono"].default:
                _fail("nonmono", "only used by the NT-ASGD switch (asgd: true); remove it")
            if self.finetuning:
                _fail("finetuning", "ASGD restarts need asgd: true")
        for key in ("finetuning", "when"):
            epochs = getattr(self, key)
            if any(e <= 0 for e in epochs) or epochs != sorted(set(epochs)):
                _fail(key, f"must be strictly increasing positive epochs, got {epochs}")
        for key in ("alpha", "beta"):
            value = getattr(self, key)
            if value is not None and value < 0:
                _fail(key, f"must be >= 0, got {value}")
        return self


class TrainSpec(_Section):
    """Length of training and logging cadence."""

    epochs: int = 40  # SR main.py default
    max_steps_per_epoch: int | None = None
    log_interval: int = 200
    checkpoint: bool = True
    # Forward-pass precision: "fp32" (the paper), or "bf16" = torch.autocast to bfloat16 for the forward
    # passes of training and evaluation (weights, gradients, masks and optimizer state stay fp32).
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        for key in ("epochs", "max_steps_per_epoch", "log_interval"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                _fail(key, f"must be a positive integer, got {value}")
        return self


class WandbSpec(_Section):
    """W&B run settings; `auto` = online when logged in, else offline (decided by the runner)."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "selfish-rnn"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)


class TrackingSpec(_Section):
    run_dir: str = "runs"
    wandb: WandbSpec = Field(default_factory=WandbSpec)


class Spec(_Section):
    """A whole experiment. Build with `load_spec`, `spec_from_dict` or `spec_with`; dump with `to_dict`."""

    name: str
    seed: int = 1111
    device: str = "auto"
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    sparse: SparseSpec = Field(default_factory=SparseSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"@: must be letters, digits and _.+- (it names a folder), got {value!r}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"@: must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _cross(self) -> Spec:
        opt, sparse, model = self.optim, self.sparse, self.model
        ar_tar = _AR_TAR_MODELS.get(model.type)
        for key, index in (("alpha", 0), ("beta", 1)):
            value = getattr(opt, key)
            if ar_tar is None:
                if value:
                    raise ValueError(f"@optim.{key}: AR/TAR is not used by model type {model.type} "
                                     "(only onlstm, mos); remove it")
                setattr(opt, key, 0.0)
            elif value is None:
                setattr(opt, key, ar_tar[index])
        # SNFS-style momentum criteria read a momentum buffer. SNT-ASGD keeps none (PyTorch ASGD has no
        # momentum), so after the NT switch there would be nothing to read; plain SGD needs momentum > 0
        # to have a buffer at all (SR's default SGD crashes here, spec §3.3); Adam has exp_avg.
        uses_momentum = sparse.enabled and "momentum" in (sparse.growth, sparse.redistribution)
        if uses_momentum and opt.name == "sgd" and (opt.asgd or opt.momentum <= 0):
            key = "growth" if sparse.growth == "momentum" else "redistribution"
            raise ValueError(f"@sparse.{key}: momentum criteria need a momentum buffer: use optim.name: adam, "
                             "or optim.name: sgd with optim.momentum > 0 and optim.asgd: false "
                             f"(got momentum {opt.momentum}, asgd {opt.asgd})")
        if sparse.update_in_switch_epoch and not opt.asgd:
            raise ValueError("@sparse.update_in_switch_epoch: only used with optim.asgd: true; remove it")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain JSON/YAML-able data (no `base`; model keys the type does not use left out)."""
        data = self.model_dump(mode="json")
        used = set(MODEL_DEFAULTS[self.model.type])
        data["model"] = {k: v for k, v in data["model"].items() if k == "type" or k in used}
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------------------------------------
# YAML reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                    key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, source: str) -> Any:
    """Parse YAML text with safe-load rules; explicit tags and duplicate keys are errors."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            tag = getattr(event, "tag", None)
            if tag is not None:
                line = event.start_mark.line + 1
                raise SpecError(f"{source}: line {line}: YAML tags are not allowed (found {tag}); "
                                "write plain values")
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{source}: {where}malformed YAML: {problem}") from None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


Origins = dict[tuple[str, ...], str]


def _record_origins(data: Mapping, source: str, prefix: tuple[str, ...], origins: Origins) -> None:
    for key, value in data.items():
        path = (*prefix, str(key))
        origins[path] = source
        if isinstance(value, Mapping):
            _record_origins(value, source, path, origins)


def _merge(base: dict, child: Mapping, source: str, prefix: tuple[str, ...], origins: Origins) -> dict:
    """Key-by-key recursive merge of `child` over `base`; null for a section resets it to defaults."""
    out = dict(base)
    for key, value in child.items():
        path = (*prefix, str(key))
        if value is None and (isinstance(out.get(key), Mapping) or _section_at(path) is not None):
            out.pop(key, None)  # a null section with nothing to reset is just the defaults
            for p in [p for p in origins if p[: len(path)] == path]:
                origins.pop(p)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            origins[path] = source
            out[key] = _merge(dict(out[key]), value, source, path, origins)
        else:
            for p in [p for p in origins if p[: len(path)] == path]:
                origins.pop(p)
            out[key] = copy.deepcopy(value)
            origins[path] = source
            if isinstance(value, Mapping):
                _record_origins(value, source, path, origins)
    return out


def _load_file(path: Path, stack: tuple[Path, ...], origins: Origins) -> dict:
    """Read one spec file and its `base:` chain into a merged raw dict (without `name` from bases)."""
    source = _display(path)
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(_display(p) for p in (*stack, real))
        raise SpecError(f"{_display(stack[-1])}: base: inheritance cycle: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot read: {exc.strerror}") from None
    data = _read_yaml(text, source)
    if data is None:
        raise SpecError(f"{source}: empty spec file")
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a mapping of keys (name, data, model, ...), "
                        f"got {type(data).__name__}")
    data = dict(data)
    base = data.pop("base", None)
    merged: dict = {}
    if base is not None:
        if not isinstance(base, str) or not base:
            raise SpecError(f"{source}: base: must be a path to another spec (relative to this file), "
                            f"got {base!r}")
        base_path = path.parent / base
        if not base_path.exists():
            raise SpecError(f"{source}: base: file not found: {_display(base_path)}")
        merged = _load_file(base_path, (*stack, real), origins)
        merged.pop("name", None)  # names are never inherited
        origins.pop(("name",), None)
    return _merge(merged, data, source, (), origins)


# ------------------------------------------------------------------------------------------------
# Overrides


def _field_at(path: Sequence[str]) -> tuple[bool, str]:
    """Whether `path` names a spec key; if not, a hint listing the allowed keys at the failing level."""
    model: type[BaseModel] | None = Spec
    for depth, key in enumerate(path):
        if model is None:
            return False, f"{'.'.join(path[:depth])} is not a section"
        fields = model.model_fields
        if key not in fields:
            where = ".".join(path[:depth]) or "top level"
            return False, f"allowed at {where}: {', '.join(fields)}"
        annotation = fields[key].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True, ""


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `key.path=value` (value with YAML scalar rules: 0.5, true, null, [1, 2], 'text')."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item}: expected key.path=value")
    path = key.split(".")
    if path == ["base"]:
        raise SpecError(f"--set {item}: base cannot be overridden; point at another spec file instead")
    known, hint = _field_at(path)
    if not known:
        raise SpecError(f"--set {item}: unknown key {key} ({hint})")
    value = _read_yaml(raw, f"--set {key}") if raw.strip() else None
    return path, value


def _apply_overrides(data: dict, overrides: Iterable[str | tuple[Sequence[str], Any]], origins: Origins,
                     source: str = "override") -> dict:
    for item in overrides:
        if isinstance(item, str):
            path, value = parse_override(item)
            label = f"--set {'.'.join(path)}"
        else:
            path, value = list(item[0]), item[1]
            known, hint = _field_at(path)
            if not known:
                raise SpecError(f"{source}: {'.'.join(path)}: unknown key ({hint})")
            label = source
        child: Any = value
        for key in reversed(path):
            child = {key: child}
        data = _merge(data, child, label, (), origins)
    return data


# ------------------------------------------------------------------------------------------------
# Validation and error translation

_MESSAGES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "missing": "is required",
}


def _section_at(path: Sequence[str]) -> type[BaseModel] | None:
    """The section model at `path` (Spec for the top level), or None if `path` is not a section."""
    model: type[BaseModel] = Spec
    for key in path:
        field = model.model_fields.get(key)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _translate(error: dict, origins: Origins, default_source: str) -> str:
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    message = error["msg"]
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
        if message.startswith("@"):
            rel, _, message = message[1:].partition(": ")
            loc = loc + [p for p in rel.split(".") if p]
    elif kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        allowed = ", ".join(section.model_fields) if section is not None else ""
        message = f"unknown key (allowed: {allowed})" if allowed else "unknown key"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be one of {expected}, got {error.get('input')!r}"
    elif kind == "model_type" or kind == "model_attributes_type":
        message = "must be a mapping of keys"
    elif kind in _MESSAGES:
        message = f"{_MESSAGES[kind]}, got {error.get('input')!r}"
    # `update_every: Literal["epoch"] | int` reports once per union member; give one line instead.
    if "update_every" in loc[:-1]:
        loc = loc[: loc.index("update_every") + 1]
        message = f"must be 'epoch' or a positive number of steps, got {error.get('input')!r}"
    source = default_source
    for depth in range(len(loc), 0, -1):
        if tuple(loc[:depth]) in origins:
            source = origins[tuple(loc[:depth])]
            break
    return f"{source}: {'.'.join(loc) or '(top level)'}: {message}"


def _validate(data: Mapping, origins: Origins, source: str) -> Spec:
    try:
        return Spec.model_validate(dict(data))
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            line = _translate(error, origins, source)
            if line not in lines:
                lines.append(line)
        raise SpecError("\n".join(lines)) from None


# ------------------------------------------------------------------------------------------------
# Public API


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read a spec file (with its `base:` chain), apply `key.path=value` overrides, validate.

    Raises `SpecError` naming the file, key path and what is allowed.
    """
    path = Path(path)
    origins: Origins = {}
    data = _load_file(path, (), origins)
    if "name" not in data:
        data["name"] = path.stem
        origins[("name",)] = _display(path)
    data = _apply_overrides(data, overrides, origins)
    return _validate(data, origins, _display(path))


def spec_from_dict(data: Mapping[str, Any], source: str = "<spec>",
                   overrides: Sequence[str] = ()) -> Spec:
    """Validate an in-memory spec (e.g. a resolved spec read back from a run folder or a checkpoint).

    `base` is not allowed here (there is no file to resolve it against).
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a mapping, got {type(data).__name__}")
    if "base" in data:
        raise SpecError(f"{source}: base: only allowed in spec files")
    origins: Origins = {}
    _record_origins(data, source, (), origins)
    merged = _apply_overrides(copy.deepcopy(dict(data)), overrides, origins)
    return _validate(merged, origins, source)


def spec_with(spec: Spec, changes: Mapping[str, Any], source: str = "override") -> Spec:
    """A new validated spec with `{"sparse.density": 0.5, ...}` applied (for sweeps)."""
    origins: Origins = {}
    data = spec.to_dict()
    _record_origins(data, f"<{spec.name}>", (), origins)
    data = _apply_overrides(data, [(key.split("."), value) for key, value in changes.items()], origins, source)
    return _validate(data, origins, source)


def save_spec(spec: Spec, path: str | Path) -> None:
    """Write the resolved spec as YAML (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(spec.to_yaml(), encoding="utf-8")
    tmp.replace(path)
