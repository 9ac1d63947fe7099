"""Spec loading and validation: every rule gives a SpecError naming the file and the key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfish.spec import MODEL_DEFAULTS, Spec, SpecError, load_spec, spec_from_dict, spec_with

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "experiments").rglob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return str(info.value)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # file names in messages are shown relative to the working directory


SPARSE = "name: t\nsparse: {enabled: true}\n"


# ---- defaults and round trip ------------------------------------------------------------------

def test_minimal_spec_has_documented_defaults(tmp_path):
    spec = load_spec(write(tmp_path, "m.yaml", "name: m\n"))
    assert spec.seed == 1111 and spec.device == "auto"
    assert spec.data.batch_size == 20 and spec.data.test_batch_size == 20  # null -> eval_batch_size
    assert spec.model.options() == MODEL_DEFAULTS["lstm"]
    assert spec.sparse.enabled is False
    assert spec.optim.lr == 15.0 and spec.optim.asgd is True and spec.optim.alpha == 0.0
    assert spec.tracking.wandb.mode == "auto" and spec.tracking.wandb.project == "selfish-rnn"


def test_name_defaults_to_file_stem(tmp_path):
    assert load_spec(write(tmp_path, "stemmed.yaml", "seed: 3\n")).name == "stemmed"


def test_to_dict_round_trips_and_is_json(tmp_path):
    spec = load_spec(REPO / "experiments/paper/onlstm_ptb_1000.yaml")
    data = spec.to_dict()
    json.dumps(data)
    assert "base" not in data
    assert "recurrence_depth" not in data["model"]  # keys the type does not use are left out
    again = spec_from_dict(yaml.safe_load(spec.to_yaml()))
    assert again == spec


def test_type_dependent_defaults(tmp_path):
    on = load_spec(write(tmp_path, "o.yaml", "name: o\nmodel: {type: onlstm}\n"))
    assert on.model.chunk_size == 10 and on.model.tied is True
    assert (on.optim.alpha, on.optim.beta) == (2.0, 1.0)
    mos = load_spec(write(tmp_path, "mo.yaml", "name: mo\nmodel: {type: mos, emsize: 300, dropouth: 0.2}\n"))
    assert mos.model.nhidlast == 300 and mos.model.dropoutl == 0.2  # MoS: -1 -> emsize / dropouth
    adam = load_spec(write(tmp_path, "a.yaml", "name: a\noptim: {name: adam}\n"))
    assert adam.optim.lr == 1e-3 and adam.optim.asgd is False


def test_float_without_dot_is_a_number(tmp_path):
    spec = load_spec(write(tmp_path, "f.yaml", "name: f\noptim: {wdecay: 1e-6}\n"))
    assert spec.optim.wdecay == 1e-6
    assert load_spec(write(tmp_path, "q.yaml", "name: q\noptim: {lr: '40'}\n")).optim.lr == 40.0


# ---- single-key rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, words", [
    ("name: t\ndata: {batch_size: many}\n", "data.batch_size", "integer"),
    ("name: t\nmodel: {tied: 1}\n", "model.tied", "true or false"),
    ("name: t\nseed: 1.5\n", "seed", "integer"),
    ("name: t\nmodel: {nhid: 0}\n", "model.nhid", "positive"),
    ("name: t\ndata: {bptt: -3}\n", "data.bptt", "positive"),
    ("name: t\ntrain: {epochs: 0}\n", "train.epochs", "positive"),
    ("name: t\nmodel: {dropout: 1.0}\n", "model.dropout", "[0, 1)"),
    ("name: t\nmodel: {type: gru}\n", "model.type", "'lstm', 'rhn', 'onlstm' or 'mos'"),
    ("name: t\ndata: {corpus: wt103}\n", "data.corpus", "'ptb' or 'wikitext2'"),
    ("name: t\ndevice: gpu\n", "device", "auto, cpu, cuda or cuda:N"),
    ("name: t\noptim: {lr: .inf}\n", "optim.lr", "finite"),
    ("name: 'a b'\n", "name", "folder"),
    ("name: t\nsparse: {enabled: true, density: 1.5}\n", "sparse.density", "(0, 1], got 1.5"),
    ("name: t\nsparse: {enabled: true, density: 0}\n", "sparse.density", "(0, 1]"),
    ("name: t\nsparse: {enabled: true, death_rate: 1.0}\n", "sparse.death_rate", "[0, 1)"),
    ("name: t\nsparse: {enabled: true, update_every: 0}\n", "sparse.update_every", "'epoch' or a positive"),
    ("name: t\nsparse: {enabled: true, update_every: weekly}\n", "sparse.update_every", "'epoch'"),
    ("name: t\nsparse: {enabled: true, growth: magic}\n", "sparse.growth", "must be one of"),
    ("name: t\noptim: {finetuning: [10, 5]}\n", "optim.finetuning", "strictly increasing"),
    ("name: t\ntracking: {wandb: {mode: cloud}}\n", "tracking.wandb.mode", "'auto', 'online'"),
])
def test_bad_values_name_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, "bad.yaml", text)
    message = error_of(path)
    assert message.startswith("bad.yaml: ") or message.startswith(f"{path}: ")
    assert f": {key}: " in message and words in message


def test_unknown_keys_list_the_allowed_ones(tmp_path):
    message = error_of(write(tmp_path, "u.yaml", "name: t\nsparse: {enabled: true, densty: 0.3}\n"))
    assert "sparse.densty: unknown key" in message and "density" in message
    top = error_of(write(tmp_path, "v.yaml", "name: t\nlearning_rate: 3\n"))
    assert "learning_rate: unknown key" in top and "optim" in top


# ---- cross-field rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, words", [
    ("model: {emsize: 200, nhid: 300, tied: true}\n", "model.tied", "emsize == nhid"),
    ("model: {type: rhn, emsize: 200, nhid: 300, tied: true}\n", "model.tied", "emsize == nhid"),
    ("model: {type: onlstm, tied: false}\n", "model.tied", "always ties"),
    ("model: {type: onlstm, nhid: 1155}\n", "model.chunk_size", "divide nhid"),
    ("model: {chunk_size: 5}\n", "model.chunk_size", "not used by model type lstm"),
    ("model: {type: rhn, wdrop: 0.5}\n", "model.wdrop", "not used by model type rhn"),
    ("optim: {alpha: 2}\n", "optim.alpha", "not used by model type lstm"),
    ("sparse: {density: 0.5}\n", "sparse.density", "enabled is false"),
    ("sparse: {enabled: true, growth: momentum}\n", "sparse.growth", "momentum buffer"),
    ("sparse: {enabled: true, redistribution: momentum}\noptim: {momentum: 0.9}\n",
     "sparse.redistribution", "asgd: false"),
    ("sparse: {enabled: true, growth: momentum}\noptim: {asgd: false}\n", "sparse.growth", "momentum > 0"),
    ("sparse: {enabled: true, death_rate: 0.0}\n", "sparse.death_rate", "decay: constant"),
    ("sparse: {enabled: true, decay: constant, death_rate_min: 0.01}\n", "sparse.death_rate_min", "constant"),
    ("sparse: {enabled: true, growth: gradient, growth_count: exact}\n", "sparse.growth_count", "random"),
    ("sparse: {enabled: true, update_in_switch_epoch: true}\noptim: {asgd: false}\n",
     "sparse.update_in_switch_epoch", "asgd: true"),
    ("optim: {name: adam, asgd: true}\n", "optim.asgd", "name: sgd"),
    ("optim: {name: adam, momentum: 0.9}\n", "optim.momentum", "not used by adam"),
    ("optim: {asgd: false, nonmono: 3}\n", "optim.nonmono", "NT-ASGD"),
    ("optim: {asgd: false, finetuning: [5]}\n", "optim.finetuning", "asgd: true"),
    ("data: {max_seq_len_delta: 20}\n", "data.max_seq_len_delta", "variable_bptt"),
])
def test_cross_field_rules(tmp_path, text, key, words):
    message = error_of(write(tmp_path, "x.yaml", "name: t\n" + text))
    assert message.startswith("x.yaml: ") or "x.yaml: " in message
    assert f": {key}: " in message and words in message


def test_momentum_criteria_allowed_with_momentum_sgd_or_adam(tmp_path):
    sgd = "name: t\nsparse: {enabled: true, growth: momentum, redistribution: momentum}\n" \
          "optim: {momentum: 0.9, asgd: false}\n"
    assert load_spec(write(tmp_path, "s.yaml", sgd)).optim.momentum == 0.9
    adam = "name: t\nsparse: {enabled: true, growth: momentum}\noptim: {name: adam}\n"
    assert load_spec(write(tmp_path, "a.yaml", adam)).optim.name == "adam"
    grad = "name: t\nsparse: {enabled: true, growth: gradient}\n"
    assert load_spec(write(tmp_path, "g.yaml", grad)).sparse.growth == "gradient"


def test_cuda_device_strings(tmp_path):
    for device in ("cpu", "cuda", "cuda:1", "auto"):
        assert load_spec(write(tmp_path, "d.yaml", f"name: t\ndevice: '{device}'\n")).device == device
    assert "device" in error_of(write(tmp_path, "e.yaml", "name: t\ndevice: 'cuda:x'\n"))


# ---- YAML rules ----------------------------------------------------------------------------------

def test_yaml_tags_are_rejected(tmp_path):
    message = error_of(write(tmp_path, "tag.yaml", "name: t\nseed: !!python/object:os.system ls\n"))
    assert message.startswith("tag.yaml: line 2: YAML tags are not allowed")
    assert "tags are not allowed" in error_of(write(tmp_path, "t2.yaml", "name: !!str t\n"))


def test_malformed_yaml_and_duplicates(tmp_path):
    message = error_of(write(tmp_path, "bad.yaml", "name: t\nmodel: {type: lstm\n"))
    assert message.startswith("bad.yaml: ") and "malformed YAML" in message
    dup = error_of(write(tmp_path, "dup.yaml", "name: t\nseed: 1\nseed: 2\n"))
    assert "duplicate key 'seed'" in dup
    assert "mapping" in error_of(write(tmp_path, "list.yaml", "- a\n- b\n"))
    assert "a key must be a plain value" in error_of(write(tmp_path, "key.yaml", "? [a, b]\n: 1\n"))
    assert "empty" in error_of(write(tmp_path, "empty.yaml", ""))
    assert "file not found" in error_of(tmp_path / "missing.yaml")


# ---- base inheritance ----------------------------------------------------------------------------

def test_base_inherits_key_by_key_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "root.yaml", "name: root\nseed: 7\nmodel: {emsize: 300, nhid: 300}\n"
                                 "sparse: {enabled: true, density: 0.2, death_rate: 0.6}\n")
    write(tmp_path, "sub/mid.yaml", "base: ../root.yaml\nmodel: {dropout: 0.1}\n")
    leaf = write(tmp_path, "sub/leaf.yaml", "base: mid.yaml\nsparse: {density: 0.4}\n")
    spec = load_spec(leaf)
    assert spec.name == "leaf"  # names are not inherited
    assert spec.seed == 7 and spec.model.emsize == 300 and spec.model.dropout == 0.1
    assert spec.sparse.density == 0.4 and spec.sparse.death_rate == 0.6


def test_null_section_resets_to_defaults(tmp_path):
    write(tmp_path, "s.yaml", "name: s\nsparse: {enabled: true, density: 0.2, death_rate: 0.6}\n")
    dense = load_spec(write(tmp_path, "d.yaml", "base: s.yaml\nsparse: null\n"))
    assert dense.sparse == Spec.model_fields["sparse"].default_factory()


def test_error_names_the_file_that_set_the_key(tmp_path):
    write(tmp_path, "root.yaml", "name: root\nsparse: {enabled: true, density: 2.0}\n")
    leaf = write(tmp_path, "leaf.yaml", "base: root.yaml\nseed: 3\n")
    assert error_of(leaf).startswith("root.yaml: sparse.density: must be in (0, 1]")


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    message = error_of(tmp_path / "a.yaml")
    assert "base: inheritance cycle" in message and "a.yaml -> " in message
    assert "base: file not found" in error_of(write(tmp_path, "c.yaml", "base: nope.yaml\n"))
    assert "base: must be a path" in error_of(write(tmp_path, "e.yaml", "base: 3\n"))


# ---- overrides -----------------------------------------------------------------------------------

def test_set_overrides_use_yaml_scalars(tmp_path):
    path = write(tmp_path, "s.yaml", SPARSE)
    spec = load_spec(path, ["sparse.density=0.5", "optim.lr=20", "data.dir=null", "model.tied=false",
                            "optim.when=[3, 6]", "tracking.wandb.tags=[a, b]", "name=other"])
    assert spec.sparse.density == 0.5 and spec.optim.lr == 20.0 and spec.data.dir is None
    assert spec.optim.when == [3, 6] and spec.tracking.wandb.tags == ["a", "b"] and spec.name == "other"


@pytest.mark.parametrize("item, words", [
    ("sparse.densty=0.5", "unknown key sparse.densty"),
    ("nosuch=1", "unknown key nosuch"),
    ("seed.x=1", "seed is not a section"),
    ("sparse.density", "expected key.path=value"),
    ("base=x.yaml", "base cannot be overridden"),
    ("sparse.density=1.5", "--set sparse.density: sparse.density: must be in (0, 1]"),
    ("seed=!!python/none x", "YAML tags are not allowed"),
])
def test_bad_overrides(tmp_path, item, words):
    assert words in error_of(write(tmp_path, "s.yaml", SPARSE), [item])


def test_spec_with_and_spec_from_dict(tmp_path):
    spec = load_spec(write(tmp_path, "s.yaml", SPARSE))
    denser = spec_with(spec, {"sparse.density": 0.6})
    assert denser.sparse.density == 0.6 and spec.sparse.density == 0.33
    with pytest.raises(SpecError, match="sweep: sparse.density: must be in"):
        spec_with(spec, {"sparse.density": 3.0}, source="sweep")
    with pytest.raises(SpecError, match="base: only allowed in spec files"):
        spec_from_dict({"name": "x", "base": "y.yaml"})
    with pytest.raises(SpecError, match="run/spec.yaml: name: is required"):
        spec_from_dict({"seed": 1}, source="run/spec.yaml")


def test_validation_error_never_leaks(tmp_path):
    path = write(tmp_path, "many.yaml", "name: t\nseed: x\ndata: {bptt: y}\nmodel: {nhid: []}\n")
    message = error_of(path)
    assert "pydantic" not in message and "validation error" not in message.lower()
    assert len(message.splitlines()) == 3


# ---- shipped specs -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    assert spec.name
    assert path.read_text().lstrip().startswith("#")  # every file says where it comes from


def test_paper_lstm_is_the_readme_command():
    spec = load_spec(REPO / "experiments/paper/lstm_ptb.yaml")
    assert (spec.seed, spec.optim.lr, spec.sparse.death_rate, spec.sparse.density, spec.train.epochs) == \
           (1111, 40.0, 0.8, 0.33, 100)
    assert (spec.model.emsize, spec.model.nhid, spec.model.nlayers, spec.model.dropout) == (1500, 1500, 2, 0.65)
    dense = load_spec(REPO / "experiments/paper/lstm_ptb_dense.yaml")
    assert not dense.sparse.enabled and dense.model == spec.model and dense.optim == spec.optim
    small = load_spec(REPO / "experiments/paper/lstm_ptb_small_dense.yaml")
    h = small.model.nhid
    weights = 2 * 10000 * h + 2 * 8 * h * h
    assert abs(weights - 21.78e6) / 21.78e6 < 0.002
    assert abs(weights - 21.78e6) < abs(2 * 10000 * (h - 1) + 16 * (h - 1) ** 2 - 21.78e6)


def test_model_keys_are_constructor_arguments():
    """The wiring passes only the options a model's constructor takes: a spec key the constructor does not
    know would be dropped silently, so every key of MODEL_DEFAULTS must be a constructor argument."""
    import inspect

    from selfish.models import MODEL_REGISTRY

    assert set(MODEL_DEFAULTS) <= set(MODEL_REGISTRY)
    for kind, defaults in MODEL_DEFAULTS.items():
        accepted = set(inspect.signature(MODEL_REGISTRY[kind]).parameters)
        assert set(defaults) <= accepted, kind
