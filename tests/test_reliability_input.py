"""Bad input never crashes (issue 8, item 1): property-based (hypothesis) broken experiment specs, sweep specs,
`--set` overrides, CLI flags and storage URLs, run through `runner.main([...])` in-process (and a few as
subprocesses). Always exit code 2, an error that names the file and the key, no traceback, and nothing under
the run root that looks like a run. Plus: YAML is read only with safe loaders, every `torch.load` is
`weights_only=True`."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import runner
from selfish.spec import Spec, SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

GOOD = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "data": {"corpus": "ptb", "batch_size": 4, "eval_batch_size": 4, "bptt": 8, "max_train_tokens": 800,
             "max_valid_tokens": 300, "max_test_tokens": 300},
    "model": {"type": "lstm", "emsize": 8, "nhid": 8, "nlayers": 1, "dropout": 0.1},
    "sparse": {"enabled": True, "density": 0.5, "death_rate": 0.5},
    "optim": {"lr": 10},
    "train": {"epochs": 1},
    "tracking": {"wandb": {"mode": "disabled"}},
}
SECTIONS = {name: field.annotation for name, field in Spec.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, object)
            and hasattr(field.annotation, "model_fields")}


@contextlib.contextmanager
def fresh_dir() -> Iterator[Path]:
    """A new empty working folder per example (hypothesis reuses function-scoped fixtures)."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ())
    for var in ("SELFISH_DATA", "WANDB_MODE", "WANDB_API_KEY", "SELFISH_FAULT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SELFISH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def run_main(capsys, *argv: str) -> tuple[int, str]:
    code = runner.main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def looks_like_runs(root: Path) -> list[Path]:
    """Folders holding anything a run folder holds."""
    marks = ("spec.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "wandb.json")
    return [p for p in root.rglob("*") if p.is_file() and p.name in marks and p.parent != root]


def assert_bad_input(code: int, text: str, *words: str, root: Path | None = None) -> None:
    assert code == 2, text
    assert "Traceback" not in text, text
    assert text.startswith("selfish: error: ") or text.startswith("error: ") or "usage:" in text, text
    for word in words:
        assert word in text, (word, text)
    if root is not None:
        assert not looks_like_runs(root), looks_like_runs(root)
        assert not (root / "runs").exists()


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


# ---- strategies -----------------------------------------------------------------------------------

identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
junk_values = st.one_of(st.text(max_size=8), st.lists(st.integers(), max_size=3),
                        st.dictionaries(identifiers, st.integers(), max_size=2), st.booleans(), st.none(),
                        st.floats(allow_nan=True, allow_infinity=True), st.integers())


@st.composite
def unknown_keys(draw) -> tuple[dict, str]:
    section = draw(st.sampled_from(sorted(SECTIONS) + [""]))
    known = set(SECTIONS[section].model_fields) if section else set(Spec.model_fields)
    key = draw(identifiers.filter(lambda k: k not in known))
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    if section:
        data[section] = {**data.get(section, {}), key: draw(junk_values)}
    else:
        data[key] = draw(junk_values)
    return data, f"{section}.{key}" if section else key


# (key path, values of the wrong type or out of range)
BAD_VALUES = {
    ("seed",): st.one_of(st.text(min_size=1).filter(lambda t: not re.fullmatch(r"\s*[-+]?\d+\s*", t)),
                         st.lists(st.integers(), min_size=1)),
    ("device",): st.text(max_size=10).filter(lambda t: not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", t)),
    ("name",): st.sampled_from(["", "a/b", "../up", " spaced", "x" * 3 + "/"]),
    ("data", "batch_size"): st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), st.text(min_size=1)),
    ("data", "bptt"): st.integers(max_value=0),
    ("data", "corpus"): st.text(max_size=10).filter(lambda t: t not in ("ptb", "wikitext2")),
    ("data", "max_train_tokens"): st.integers(max_value=7),
    ("model", "type"): st.text(max_size=10).filter(lambda t: t not in ("lstm", "rhn", "onlstm", "mos")),
    ("model", "nhid"): st.integers(max_value=0),
    ("model", "dropout"): st.one_of(st.floats(min_value=1.0, allow_nan=False, allow_infinity=False),
                                    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                                    st.sampled_from([".nan", ".inf"])),
    ("model", "chunk_size"): st.integers(min_value=1, max_value=50),  # not used by lstm: an error
    ("sparse", "density"): st.one_of(st.floats(min_value=1.0001, allow_nan=False, allow_infinity=False),
                                     st.floats(max_value=0.0, allow_nan=False, allow_infinity=False)),
    ("sparse", "death_rate"): st.floats(min_value=1.0, max_value=1e6, allow_nan=False),
    ("sparse", "update_every"): st.one_of(st.integers(max_value=0), st.sampled_from(["never", "epochs", []])),
    ("sparse", "death"): st.text(max_size=8).filter(lambda t: t not in ("magnitude", "magnitude_rnn", "SET", "threshold")),
    ("optim", "lr"): st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                               st.sampled_from([".inf", "-.inf", ".nan", "fast"])),
    ("optim", "name"): st.text(max_size=8).filter(lambda t: t not in ("sgd", "adam")),
    ("optim", "when"): st.lists(st.integers(max_value=0), min_size=1, max_size=3),
    ("train", "epochs"): st.one_of(st.integers(max_value=0), st.text(min_size=1).filter(lambda t: not t.strip().isdigit())),
    ("train", "checkpoint"): st.sampled_from(["sometimes", 2, [True]]),
    ("tracking", "wandb"): st.sampled_from(["online", 3, [1]]),
}


@st.composite
def bad_values(draw) -> tuple[dict, str]:
    path = draw(st.sampled_from(sorted(BAD_VALUES)))
    value = draw(BAD_VALUES[path])
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in GOOD.items()}
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data, ".".join(path)


def spec_text(data: dict) -> str:
    text = dump(data)
    return text.replace("'.nan'", ".nan").replace("'.inf'", ".inf").replace("'-.inf'", "-.inf")


# ---- experiment specs -----------------------------------------------------------------------------

@SETTINGS
@given(case=unknown_keys())
def test_unknown_keys_exit_2_naming_file_and_key(capsys, case):
    data, key = case
    with fresh_dir() as root:
        Path("bad.yaml").write_text(dump(data))
        code, text = run_main(capsys, "train", "bad.yaml")
        assert_bad_input(code, text, "bad.yaml", key, root=root)


@SETTINGS
@given(case=bad_values())
def test_wrong_types_and_out_of_range_values_exit_2(capsys, case):
    data, key = case
    with fresh_dir() as root:
        Path("bad.yaml").write_text(spec_text(data))
        code, text = run_main(capsys, "train", "bad.yaml")
        assert_bad_input(code, text, "bad.yaml", key, root=root)


@SETTINGS
@given(position=st.integers(min_value=0, max_value=400), junk=st.sampled_from(
    ["{", "}", "[", "]", ": :", "\t", "'", '"', "- ", "&a", "*b", "%YAML", "? ", "\x00", "@", "`", "|\n  x\n y"]))
def test_malformed_yaml_exits_2_with_file_and_line(capsys, position, junk):
    text = spec_text(GOOD)
    position = min(position, len(text))
    broken = text[:position] + junk + text[position:]
    with fresh_dir() as root:
        Path("bad.yaml").write_text(broken)
        try:
            load_spec("bad.yaml")
        except SpecError:
            pass
        else:
            assume(False)  # the insertion happened to keep the spec valid
        code, out = run_main(capsys, "train", "bad.yaml")
        assert_bad_input(code, out, "bad.yaml", root=root)


TAGS = ["!!python/object/apply:os.system ['touch PWNED']", "!!python/name:os.system", "!custom 3",
        "!!binary aGVsbG8=", "!!set {a: null}", "!!timestamp 2020-01-01", "!!str 5", "!!float 0.5"]


@SETTINGS
@given(tag=st.sampled_from(TAGS), where=st.sampled_from(["seed", "data.batch_size", "sparse.density", "name"]))
def test_yaml_tags_are_refused_and_never_executed(capsys, tag, where):
    section, _, key = where.rpartition(".")
    data = dict(GOOD)
    data.pop(section or key)
    text = spec_text(data) + (f"{section}:\n  {key}: {tag}\n" if section else f"{key}: {tag}\n")
    with fresh_dir() as root:
        Path("bad.yaml").write_text(text)
        code, out = run_main(capsys, "train", "bad.yaml")
        assert_bad_input(code, out, "bad.yaml", "YAML tags are not allowed", root=root)
        assert not (root / "PWNED").exists()


@SETTINGS
@given(length=st.integers(min_value=1, max_value=4), shape=st.sampled_from(["cycle", "self", "missing", "type"]))
def test_broken_base_chains_exit_2(capsys, length, shape):
    with fresh_dir() as root:
        names = [f"s{i}.yaml" for i in range(length)]
        for index, name in enumerate(names):
            data = dict(GOOD) if index == length - 1 else {"seed": index}
            target = names[index + 1] if index + 1 < length else None
            if index == length - 1:
                target = {"cycle": names[0], "self": name, "missing": "nowhere/x.yaml", "type": None}[shape]
                if shape == "type":
                    data["base"] = [1, 2]
            if target is not None:
                data = {"base": target, **data}
            Path(name).write_text(dump(data))
        code, out = run_main(capsys, "train", names[0])
        words = {"cycle": ["inheritance cycle"], "self": ["inheritance cycle"], "missing": ["base: file not found"],
                 "type": ["base: must be a path"]}[shape]
        assert_bad_input(code, out, "base", *words, root=root)
        assert names[-1] in out


def test_missing_spec_file_empty_file_and_non_mapping(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text, words in (("missing.yaml", None, "missing.yaml: file not found"),
                              ("empty.yaml", "", "empty.yaml: empty spec file"),
                              ("list.yaml", "- 1\n- 2\n", "list.yaml: a spec must be a mapping"),
                              ("dir.yaml", "DIR", "dir.yaml: cannot read")):
        if text == "DIR":
            (tmp_path / name).mkdir()
        elif text is not None:
            (tmp_path / name).write_text(text)
        for command in ("train", "describe"):
            code, out = run_main(capsys, command, name)
            assert_bad_input(code, out, words)
    assert not looks_like_runs(tmp_path)


# ---- --set overrides and flags ----------------------------------------------------------------------

@SETTINGS
@given(key=st.one_of(identifiers, st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(sorted(SECTIONS)), identifiers)),
       value=st.text(alphabet="abc019.:[]{}!-", max_size=6))
def test_broken_set_overrides_exit_2(capsys, key, value):
    known = key in Spec.model_fields or (key.count(".") == 1 and key.split(".")[1] in
                                         SECTIONS.get(key.split(".")[0], Spec).model_fields)
    assume(not known)
    with fresh_dir() as root:
        Path("s.yaml").write_text(spec_text(GOOD))
        code, out = run_main(capsys, "train", "s.yaml", "--set", f"{key}={value}")
        assert_bad_input(code, out, "--set", key, root=root)


@SETTINGS
@given(item=st.sampled_from(["sparse.density=2", "optim.lr=-1", "seed=abc", "data.bptt=[1]", "sparse.density",
                             "=3", "model.type=gru", "train.epochs=!!python/name:os.system", "base=x.yaml",
                             "data.batch_size={a: 1}", "sparse.density=.nan"]))
def test_set_values_are_validated_like_the_file(capsys, item):
    with fresh_dir() as root:
        Path("s.yaml").write_text(spec_text(GOOD))
        code, out = run_main(capsys, "train", "s.yaml", "--set", item)
        assert_bad_input(code, out, root=root)
        assert "--set" in out or "s.yaml" in out


FLAG_CASES = st.one_of(
    st.tuples(st.sampled_from(["train", "describe", "eval"]), st.from_regex(r"--[a-z]{3,10}", fullmatch=True)
              .filter(lambda f: f not in ("--set", "--resume", "--run-dir", "--quiet", "--threads", "--json",
                                          "--checkpoint", "--debug", "--help"))),
    st.tuples(st.sampled_from(["train", "describe", "eval"]), st.just("--threads"),
              st.one_of(st.text(alphabet="xyz-.", min_size=1, max_size=4), st.integers(max_value=0).map(str))),
    st.tuples(st.just("train"), st.sampled_from(["--resume", "--run-dir", "--set"])),  # missing value
    st.tuples(st.from_regex(r"[a-z]{2,9}", fullmatch=True).filter(
        lambda c: c not in ("train", "eval", "describe", "from", "sweep", "report")),),
)


@SETTINGS
@given(argv=FLAG_CASES)
def test_broken_flags_exit_2(capsys, argv):
    argv = list(argv)
    with fresh_dir() as root:
        Path("s.yaml").write_text(spec_text(GOOD))
        if argv[0] in ("train", "describe", "eval") and len(argv) > 1 and argv[1] != "--resume":
            argv.insert(1, "s.yaml")
        code, out = run_main(capsys, *argv)
        assert_bad_input(code, out, root=root)


def test_run_dir_problems_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(spec_text(GOOD))
    Path("full").mkdir()
    Path("full/x").write_text("something")
    code, out = run_main(capsys, "train", "s.yaml", "--run-dir", "full")
    assert_bad_input(code, out, "--run-dir full", "not empty")
    code, out = run_main(capsys, "train", "--resume", "full")
    assert_bad_input(code, out, "full", "not a run folder")
    Path("bad/").mkdir()
    Path("bad/spec.yaml").write_text("name: [unclosed\n")
    code, out = run_main(capsys, "train", "--resume", "bad")
    assert_bad_input(code, out, "bad/spec.yaml")
    monkeypatch.setenv("SELFISH_FAULT", "nowhere:1")
    code, out = run_main(capsys, "train", "s.yaml")
    assert_bad_input(code, out, "SELFISH_FAULT")
    assert not (tmp_path / "runs").exists()


# ---- bad inputs found only when the run is built (corpus, device, masks) ------------------------------

@pytest.mark.parametrize("override, words", [
    ("device=cuda:0", ["s.yaml", "device 'cuda:0'"]),
    ("sparse.include=[nomatch*]", ["s.yaml", "include"]),
    ("data.dir=empty", ["s.yaml", "corpus files not found"]),
    ("data.max_valid_tokens=3", ["--set data.max_valid_tokens", "must be at least 2 x eval_batch_size"]),
])
def test_inputs_refused_while_building_exit_2_and_leave_no_run_folder(capsys, tmp_path, monkeypatch, shared_data,
                                                                       override, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELFISH_DATA", str(shared_data))
    monkeypatch.setattr("selfish.data.download._open", _no_network)
    (tmp_path / "empty").mkdir()
    Path("s.yaml").write_text(spec_text(GOOD))
    code, out = run_main(capsys, "train", "s.yaml", "--set", override, "--quiet")
    assert_bad_input(code, out, *words, root=tmp_path)


def _no_network(*args, **kwargs):
    raise OSError("no network in tests")


def test_subprocess_bad_inputs_exit_2_without_traceback(tmp_path):
    """The real process (imports, argparse, error mapping) for a few of the cases above."""
    (tmp_path / "s.yaml").write_text(spec_text(GOOD))
    (tmp_path / "bad.yaml").write_text(spec_text({**GOOD, "sparse": {"enabled": True, "density": 3}}))
    (tmp_path / "tag.yaml").write_text("name: t\nseed: !!python/object/apply:os.system ['touch PWNED']\n")
    cases = [(["train", "bad.yaml"], "bad.yaml: sparse.density"),
             (["train", "tag.yaml"], "tag.yaml: line 2: YAML tags are not allowed"),
             (["train", "s.yaml", "--set", "optim.nope=1"], "unknown key optim.nope"),
             (["train", "s.yaml", "--threads", "zero"], "invalid int value"),
             (["sweep", "missing.yaml"], "missing.yaml"),
             (["sweep-status", "--storage", "mongodb://u:secret@h/db"], "unknown scheme")]
    env = {**os.environ, "SELFISH_CACHE": str(tmp_path / "cache")}
    for argv, words in cases:
        proc = subprocess.run([sys.executable, str(REPO / "runner.py"), *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (argv, proc.stderr)
        assert "secret" not in proc.stderr + proc.stdout
    assert not (tmp_path / "PWNED").exists() and not looks_like_runs(tmp_path)


# ---- the code base: safe YAML, weights-only checkpoints --------------------------------------------------

SOURCES = [p for folder in ("selfish", "analysis", "benchmarks") for p in (REPO / folder).rglob("*.py")] + [
    REPO / "runner.py"]


def test_yaml_is_only_read_with_safe_loaders():
    unsafe = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"yaml\.(load|load_all|unsafe_load|full_load|full_load_all)\((?P<args>[^)]*)\)", text):
            if match.group(1) in ("unsafe_load", "full_load", "full_load_all") or "Loader=" not in match["args"]:
                unsafe.append(f"{path.relative_to(REPO)}: {match.group(0)}")
            elif not re.search(r"Loader=(yaml\.)?(SafeLoader|CSafeLoader|_StrictLoader)\b", match["args"]):
                unsafe.append(f"{path.relative_to(REPO)}: {match.group(0)}")
        if re.search(r"yaml\.(Loader|FullLoader|UnsafeLoader)\b", text):
            unsafe.append(f"{path.relative_to(REPO)}: an unsafe loader class")
    assert not unsafe, unsafe
    from selfish.spec import _StrictLoader

    assert issubclass(_StrictLoader, yaml.SafeLoader)


def test_every_torch_load_is_weights_only():
    calls = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):  # the call's full argument list
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append((path, text[match.start(): end + 1]))
    assert calls, "expected the checkpoint module to call torch.load"
    bad = [f"{p.relative_to(REPO)}: {c}" for p, c in calls if not re.search(r"weights_only\s*=\s*True", c)]
    assert not bad, bad


# ---- sweep specs and storage URLs --------------------------------------------------------------------

SWEEP_GOOD = {"base": "base.yaml", "study": "s", "n_trials": 2, "sampler": {"type": "random", "seed": 0},
              "space": {"sparse.density": {"type": "float", "low": 0.1, "high": 0.8}}}
density = {"type": "float", "low": 0.1, "high": 0.8}
SWEEP_BREAKS = [  # (change, key path the message must name)
    ({"n_trials": 0}, "n_trials"), ({"n_trials": "many"}, "n_trials"), ({"study": "a/b"}, "study"),
    ({"timeout": -1}, "timeout"), ({"sampler": {"type": "bayes"}}, "sampler.type"),
    ({"sampler": {"type": "random", "grid": {"x": [1]}}}, "sampler"), ({"pruner": {"type": "median", "n_startup_trials": -1}}, "pruner.n_startup_trials"),
    ({"retry": {"lease_ttl_s": 5, "lease_refresh_s": 10}}, "retry"), ({"objective": {"metrics": ["density"]}}, "objective"),
    ({"space": {}}, "space"), ({"space": {"sparse.density": {**density, "low": 0.9}}}, "space[sparse.density]"),
    ({"space": {"sparse.density": {**density, "log": True, "low": 0.0}}}, "space[sparse.density]"),
    ({"space": {"sparse.density": {"type": "categorical"}}}, "space[sparse.density]"),
    ({"space": {"sparse.density": {**density, "high": 1.5}}}, "space[sparse.density]"),
    ({"space": {"sparse.nope": density}}, "space[sparse.nope]"), ({"space": {"not a key": density}}, "space"),
    ({"fixed": {"train.epochs": 0}}, "fixed"), ({"fixed": {"nope.x": 1}}, "fixed"),
    ({"base": "missing.yaml"}, "base"), ({"base": None}, "base"), ({"study": None}, "study"),
]


@SETTINGS
@given(index=st.integers(min_value=0, max_value=len(SWEEP_BREAKS) - 1), extra_key=st.one_of(st.none(), identifiers),
       where=st.sampled_from(["", "sampler", "pruner", "retry", "objective"]))
def test_broken_sweep_specs_exit_2_naming_file_and_key(capsys, monkeypatch, index, extra_key, where):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("selfish.sweep.cli",))
    change, key = SWEEP_BREAKS[index]
    data = {**SWEEP_GOOD, **change}
    if extra_key is not None:  # and an unknown key somewhere
        known = {"": set(SWEEP_GOOD) | {"storage", "timeout", "pruner", "objective", "fixed", "retry", "sampler"},
                 "sampler": {"type", "seed", "n_startup_trials", "grid"}, "objective": {"metrics", "directions"},
                 "pruner": {"type", "n_startup_trials", "n_warmup_steps", "min_resource", "max_resource",
                            "reduction_factor"},
                 "retry": {"max_retry", "lease_ttl_s", "lease_refresh_s", "heartbeat_interval_s", "grace_period_s"}}
        assume(extra_key not in known[where])
        if where:
            section = data.get(where) if isinstance(data.get(where), dict) else {}
            data[where] = {**section, extra_key: 1}
        else:
            data[extra_key] = 1
    data = {k: v for k, v in data.items() if v is not None}
    with fresh_dir() as root:
        Path("base.yaml").write_text(spec_text(GOOD))
        Path("sweep.yaml").write_text(dump(data))
        code, out = run_main(capsys, "sweep", "sweep.yaml", "--wandb", "disabled")
        assert_bad_input(code, out, "sweep.yaml", root=root)
        assert key in out or (extra_key is not None and extra_key in out), out


@SETTINGS
@given(junk=st.sampled_from(["{", "[x", ": :", "\t", "!!python/name:os.system", "&a *b", "'", "- - x\n y: z"]),
       position=st.integers(min_value=0, max_value=200))
def test_malformed_sweep_yaml_exits_2(capsys, monkeypatch, junk, position):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("selfish.sweep.cli",))
    text = dump(SWEEP_GOOD)
    position = min(position, len(text))
    broken = text[:position] + junk + text[position:]
    try:
        parsed = yaml.safe_load(broken)
    except yaml.YAMLError:
        parsed = None
    assume(parsed != SWEEP_GOOD)
    with fresh_dir() as root:
        Path("base.yaml").write_text(spec_text(GOOD))
        Path("sweep.yaml").write_text(broken)
        code, out = run_main(capsys, "sweep", "sweep.yaml", "--wandb", "disabled")
        assert_bad_input(code, out, "sweep.yaml", root=root)


storage_urls = st.builds(
    lambda scheme, user, password, rest: (f"{scheme}://{user}:{password}@{rest}", password),
    st.sampled_from(["postgresql", "postgres", "postgresql+psycopg2", "mysql", "mongodb", "redis", "http", "ftp"]),
    st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.from_regex(r"pw[A-Za-z0-9]{6,12}", fullmatch=True),
    st.sampled_from(["127.0.0.1:9/db", "127.0.0.1:9", "localhost:9/x?sslmode=disable", ""]))


@SETTINGS
@given(case=storage_urls, command=st.sampled_from(["sweep", "sweep-status", "report", "dashboard-live"]))
def test_broken_storage_urls_exit_2_and_never_show_the_password(capsys, monkeypatch, case, command):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("selfish.sweep.cli", "analysis.cli"))
    url, password = case
    with fresh_dir() as root:
        Path("base.yaml").write_text(spec_text(GOOD))
        Path("sweep.yaml").write_text(dump(SWEEP_GOOD))
        argv = {"sweep": ["sweep", "sweep.yaml", "--storage", url, "--wandb", "disabled"],
                "sweep-status": ["sweep-status", "--storage", url],
                "report": ["report", "--sweep", url, "--out", "out"],
                "dashboard-live": ["dashboard-live", url]}[command]
        code, out = run_main(capsys, *argv)
        assert code == 2, out
        assert "Traceback" not in out and password not in out, out
        assert not list(root.rglob("*.log")) and not (root / "runs").exists() and not (root / "out").exists()
        assert not any(password in p.read_text(errors="ignore") for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("storage, words", [
    ("/proc/no-such/journal.log", "cannot open journal storage"),
    ("sqlite:///:memory:", "in-memory database"),
    ("sqlite:////no/such/dir/x.db", "cannot open storage"),
    ("postgresql://", "names no host"),
])
def test_unusable_storages_exit_2(capsys, monkeypatch, tmp_path, storage, words):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("selfish.sweep.cli",))
    monkeypatch.chdir(tmp_path)
    Path("base.yaml").write_text(spec_text(GOOD))
    Path("sweep.yaml").write_text(dump(SWEEP_GOOD))
    code, out = run_main(capsys, "sweep", "sweep.yaml", "--storage", storage, "--wandb", "disabled")
    assert_bad_input(code, out, words, root=tmp_path)
