"""The CLI: exit codes, path and W&B-mode resolution, train/eval/describe wiring (with a fake experiment),
and `from-flags` equivalence with the shipped paper specs."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import runner
from selfish.spec import load_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[1]
SEED_README = REPO.parent / "shared" / "seed" / "README.md"
PAPER = REPO / "experiments" / "paper"

# The commands of the original README (SR README.md), each with the paper spec it must convert to.
README_COMMANDS = {
    "python main.py --sparse --sparse_init uniform --optimizer sgd --model LSTM --cuda --growth random --death "
    "magnitude --redistribution none --nonmono 5 --batch_size 20 --bptt 35 --lr 40 --clip 0.25 --seed 1111 "
    "--emsize 1500 --nhid 1500 --nlayers 2 --death-rate 0.8 --dropout 0.65 --density 0.33 --epochs 100":
        "lstm_ptb.yaml",
    "python main.py --sparse --sparse_init uniform --optimizer sgd --model RHN --cuda --tied --couple --seed 42 "
    "--nlayers 1 --growth random --death magnitude --redistribution none --density 0.472 --death-rate 0.5 "
    "--clip 0.25 --lr 15 --epochs 500 --dropout 0.65 --dropouth 0.25 --dropouti 0.65 --dropoute 0.2 "
    "--emsize 830 --nhid 830": "rhn_ptb.yaml",
    "python main_ONLSTM.py --sparse --sparse_init uniform --optimizer sgd --growth random --death magnitude "
    "--redistribution none --density 0.45 --death-rate 0.5 --batch_size 20 --dropout 0.45 --dropouth 0.3 "
    "--dropouti 0.5 --nonmono 5 --wdrop 0.45 --chunk_size 10 --seed 141 --epoch 1000": "onlstm_ptb_1000.yaml",
    "python main.py --sparse --evaluate model_path --optimizer sgd --model LSTM --cuda --growth random --death "
    "magnitude --redistribution none --nonmono 5 --batch_size 20 --bptt 35 --lr 40 --clip 0.25 --seed 5 "
    "--emsize 1500 --nhid 1500 --nlayers 2 --death-rate 0.7 --dropout 0.65 --density 0.33 --epochs 100":
        "lstm_ptb_pretrained.yaml",
}


def without_name(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "name"}


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = runner.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ())  # other rooms' commands are tested there
    for var in ("SELFISH_DATA", "SELFISH_CACHE", "WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SELFISH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY = "name: tiny\nseed: 3\nmodel: {emsize: 8, nhid: 8}\ntrain: {epochs: 2}\ntracking: {wandb: {mode: disabled}}\n"


# ---- from-flags ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command, spec_file", list(README_COMMANDS.items()), ids=list(README_COMMANDS.values()))
def test_readme_commands_convert_to_the_paper_specs(capsys, command, spec_file):
    code, out, err = run_main(capsys, "from-flags", "--", *shlex.split(command))
    assert code == 0, err
    converted = spec_from_dict(yaml.safe_load(out), source="from-flags output")
    assert without_name(converted.to_dict()) == without_name(load_spec(PAPER / spec_file).to_dict())
    assert out.startswith("# Converted by `selfish from-flags`")


def test_every_readme_command_is_covered():
    if not SEED_README.exists():
        pytest.skip("original README not beside the repo")
    commands = {line.strip() for line in SEED_README.read_text().splitlines() if line.startswith("python main")}
    assert commands and commands <= set(README_COMMANDS)


def test_from_flags_notes_and_dense(capsys):
    code, out, _ = run_main(capsys, "from-flags", "--", "--model", "LSTM", "--evaluate", "m.pt", "--momentum", "0.5")
    assert code == 0
    data = yaml.safe_load(out)
    assert data["sparse"]["enabled"] is False and data["name"] == "lstm_ptb_dense" and data["device"] == "cpu"
    assert data["train"]["epochs"] == 40 and data["optim"]["lr"] == 15.0  # main.py defaults
    assert "selfish eval <this spec> --checkpoint m.pt" in out and "--momentum: unused" in out


def test_from_flags_onlstm_quirks():
    raw, notes = runner.spec_from_flags(["--chunk_size", "10", "--cuda", "--data", "/d/penn/"])
    assert raw["device"] == "cpu" and any("store_false" in n for n in notes)  # --cuda turns CUDA off there
    assert raw["data"]["dir"] == "/d" and raw["data"]["test_batch_size"] == 1
    assert raw["optim"]["finetuning"] == [500, 1000] and raw["model"]["type"] == "onlstm"
    forced, _ = runner.spec_from_flags(["--seed", "3"], "main_ONLSTM.py")
    assert forced["model"]["type"] == "onlstm" and forced["seed"] == 3 and forced["device"] == "auto"


@pytest.mark.parametrize("flags, words", [
    (["--model", "GRU"], "--model GRU"),
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--lr", "fast"], "invalid float value"),
    (["--data", "/x/books/"], "cannot tell the corpus"),
    (["--sparse", "--density", "1.5"], "from-flags: sparse.density: must be in (0, 1]"),
    ([], "give the original flags"),
])
def test_from_flags_bad_input_exits_2(capsys, flags, words):
    code, _, err = run_main(capsys, "from-flags", "--", *flags)
    assert code == 2 and words in err and "Traceback" not in err


# ---- exit codes ----------------------------------------------------------------------------------

def test_bad_spec_exits_2_with_one_line(capsys, tmp_path):
    path = write_spec(tmp_path / "bad.yaml", "name: t\nsparse: {enabled: true, density: 1.5}\n")
    code, _, err = run_main(capsys, "train", str(path))
    assert code == 2
    assert err.strip() == "selfish: error: bad.yaml: sparse.density: must be in (0, 1], got 1.5"
    assert not (tmp_path / "runs").exists()  # no run folder for a spec that did not validate


@pytest.mark.parametrize("argv, words", [
    (["train"], "give a SPEC"),
    (["train", "missing.yaml"], "missing.yaml: file not found"),
    (["train", "s.yaml", "--set", "model.nope=1"], "unknown key model.nope"),
    (["describe", "missing.yaml"], "file not found"),
    (["eval", "nowhere"], "no such spec file or run folder"),
    (["eval", "s.yaml"], "needs --checkpoint"),
    (["eval", "s.yaml", "--checkpoint", "x.pt"], "checkpoint not found"),
    (["train", "--resume", "nowhere"], "not a run folder"),
    (["bogus-command"], "invalid choice"),
])
def test_bad_input_exits_2(capsys, tmp_path, argv, words):
    write_spec(tmp_path / "s.yaml", TINY)
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and words in err and "Traceback" not in err


def test_extension_modules_add_commands(capsys, monkeypatch):
    module = SimpleNamespace()

    def register_commands(sub):
        p = sub.add_parser("sweep-status", help="from an extension")
        p.add_argument("storage")
        p.set_defaults(func=lambda args: 0 if args.storage == "ok" else 2)

    module.register_commands = register_commands
    monkeypatch.setitem(sys.modules, "fake_ext_cli", module)
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("fake_ext_cli", "no_such_module.cli"))
    assert run_main(capsys, "sweep-status", "ok")[0] == 0
    assert run_main(capsys, "sweep-status", "bad")[0] == 2
    assert "sweep-status" in run_main(capsys, "--help")[1]


def test_help_exits_0(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0 and "from-flags" in out and "describe" in out


def test_data_dir_must_exist(capsys, tmp_path, monkeypatch):
    write_spec(tmp_path / "s.yaml", TINY)
    monkeypatch.setenv("SELFISH_DATA", str(tmp_path / "no-data"))
    code, _, err = run_main(capsys, "describe", "s.yaml")
    assert code == 2 and "SELFISH_DATA: folder not found" in err


def test_subprocess_exit_code_and_message(tmp_path):
    path = write_spec(tmp_path / "bad.yaml", "name: t\nseed: !!python/object:os.system x\n")
    proc = subprocess.run([sys.executable, str(REPO / "runner.py"), "train", str(path)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "selfish: error: bad.yaml: line 2: YAML tags are not allowed " \
                                  "(found tag:yaml.org,2002:python/object:os.system); write plain values"


# ---- environment resolution ----------------------------------------------------------------------

def test_data_dir_precedence(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    spec = spec_from_dict({"name": "x", "data": {"dir": str(a)}})
    assert runner.resolve_data_dir(spec, {"SELFISH_DATA": str(b)}) == a
    plain = spec_from_dict({"name": "x"})
    assert runner.resolve_data_dir(plain, {"SELFISH_DATA": str(b)}) == b
    assert runner.resolve_data_dir(plain, {}) is None
    assert runner.resolve_cache_dir({"SELFISH_CACHE": str(a)}) == a
    assert runner.resolve_cache_dir({}) == Path.home() / ".cache" / "selfish-rnn"


def test_wandb_mode_resolution(tmp_path):
    no_netrc = {"NETRC": str(tmp_path / "none")}
    assert runner.resolve_wandb_mode("auto", no_netrc) == "offline"
    assert runner.resolve_wandb_mode("auto", {**no_netrc, "WANDB_API_KEY": "k"}) == "online"
    assert runner.resolve_wandb_mode("auto", {**no_netrc, "WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"
    assert runner.resolve_wandb_mode("disabled", {"WANDB_API_KEY": "k"}) == "disabled"
    assert runner.resolve_wandb_mode("online", no_netrc) == "online"
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    netrc_file.chmod(0o600)
    assert runner.resolve_wandb_mode("auto", {"NETRC": str(netrc_file)}) == "online"


# ---- train / eval / describe with a fake experiment ----------------------------------------------

class FakeExperiment:
    """Stands in for selfish.experiment: emits a short, plausible event stream to the sinks."""

    def __init__(self, fail: BaseException | None = None):
        self.fail, self.calls = fail, []

    def run(self, spec, *, run_dir, data_dir, cache_dir, sinks, resume=False, **kwargs):
        self.calls.append(SimpleNamespace(spec=spec, run_dir=run_dir, data_dir=data_dir, cache_dir=cache_dir,
                                          resume=resume))
        events = [{"type": "start", "step": 4 if resume else 0, "epoch": 1 if resume else 0, "params_dense": 100,
                   "params_nonzero": 100, "density": 1.0, "flops": {}, "steps_per_epoch": 4, "device": "cpu",
                   "resumed": resume}]
        if self.fail:
            for sink in sinks:
                sink.write(events[0])
            raise self.fail
        for epoch in range(2 if resume else 1, 3):
            events.append({"type": "epoch", "step": 4 * epoch, "epoch": epoch, "val_ppl": 100.0 / epoch,
                           "train_ppl": 120.0, "lr": 20.0, "phase": "sgd", "density": 1.0, "mask": None})
        events.append({"type": "test", "step": 8, "epoch": 2, "test_ppl": 49.0, "val_ppl": 50.0, "best_epoch": 2})
        events.append({"type": "end", "step": 8, "epoch": 2, "status": "completed", "reason": None})
        (Path(run_dir) / "last.pt").write_bytes(b"ckpt")
        for event in events:
            for sink in sinks:
                sink.write(event)
        for sink in sinks:
            sink.close("completed")
        return {"status": "completed", "best_val_ppl": 50.0, "test_ppl": 49.0}

    def evaluate(self, spec, checkpoint, *, data_dir, cache_dir, device=None):
        self.calls.append(SimpleNamespace(spec=spec, checkpoint=checkpoint))
        return {"val_loss": 4.0, "val_ppl": 54.6, "test_loss": 3.9, "test_ppl": 49.4}

    def describe(self, spec, *, data_dir, cache_dir):
        return {"params_dense": 66_000_000, "params_nonzero": 21_780_000, "density": 0.33, "steps_per_epoch": 1328,
                "flops": {"train_total": 1e16}, "tensors": [{"name": "rnn.weight_hh_l0", "shape": [6000, 1500],
                                                              "numel": 9_000_000, "nonzero": 2_970_000,
                                                              "maskable": True}]}


@pytest.fixture
def fake(monkeypatch):
    experiment = FakeExperiment()
    monkeypatch.setattr(runner, "_experiment", lambda: experiment)
    return experiment


def test_train_creates_a_complete_run_folder(capsys, tmp_path, fake):
    write_spec(tmp_path / "s.yaml", TINY)
    code, _, err = run_main(capsys, "train", "s.yaml", "--set", "seed=9", "--quiet", "--threads", "1")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert fake.calls[0].run_dir == run_dir and fake.calls[0].resume is False
    assert fake.calls[0].cache_dir == tmp_path / "cache" and fake.calls[0].data_dir is None
    saved = load_spec(run_dir / "spec.yaml")
    assert saved.seed == 9 and saved.to_dict() == fake.calls[0].spec.to_dict()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["run_id"] == run_dir.name and summary["test_ppl"] == 49.0
    assert summary["wandb"]["mode"] == "disabled" and "torch" in summary["versions"]
    types = [json.loads(line)["type"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert types == ["start", "epoch", "epoch", "test", "end"]


def test_train_resume_uses_the_saved_spec(capsys, tmp_path, fake):
    write_spec(tmp_path / "s.yaml", TINY)
    assert run_main(capsys, "train", "s.yaml", "--run-dir", "r1", "--quiet")[0] == 0
    code, _, err = run_main(capsys, "train", "--resume", "r1", "--quiet")
    assert code == 0, err
    assert fake.calls[-1].resume is True and fake.calls[-1].spec.seed == 3
    assert run_main(capsys, "train", "--resume", "r1", "--set", "seed=4")[0] == 2
    assert run_main(capsys, "train", "s.yaml", "--run-dir", "r1")[0] == 2  # not empty: needs --resume
    other = write_spec(tmp_path / "o.yaml", TINY.replace("seed: 3", "seed: 5"))
    code, _, err = run_main(capsys, "train", str(other), "--resume", "r1")
    assert code == 2 and "differs from the spec saved" in err


def test_train_failure_exits_1_and_marks_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_experiment", lambda: FakeExperiment(fail=RuntimeError("CUDA out of memory")))
    write_spec(tmp_path / "s.yaml", TINY)
    code, _, err = run_main(capsys, "train", "s.yaml", "--run-dir", "r", "--quiet")
    assert code == 1 and err.strip() == "selfish: error: RuntimeError: CUDA out of memory"
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"
    with pytest.raises(RuntimeError):
        runner.main(["--debug", "train", "s.yaml", "--run-dir", "r2", "--quiet"])


def test_train_data_error_exits_2(capsys, tmp_path, monkeypatch):
    from selfish.data import DataError

    monkeypatch.setattr(runner, "_experiment", lambda: FakeExperiment(fail=DataError("/d: missing penn/train.txt")))
    write_spec(tmp_path / "s.yaml", TINY)
    code, _, err = run_main(capsys, "train", "s.yaml", "--quiet")
    assert code == 2 and "missing penn/train.txt" in err


def test_eval_run_folder_and_spec(capsys, tmp_path, fake):
    write_spec(tmp_path / "s.yaml", TINY)
    run_main(capsys, "train", "s.yaml", "--run-dir", "r", "--quiet")
    code, out, _ = run_main(capsys, "eval", "r")
    assert code == 0 and "test ppl 49.40" in out and fake.calls[-1].checkpoint == Path("r") / "last.pt"
    (tmp_path / "orig.pt").write_bytes(b"x")
    code, out, _ = run_main(capsys, "eval", "s.yaml", "--checkpoint", "orig.pt", "--json")
    assert code == 0 and json.loads(out)["val_ppl"] == 54.6


def test_describe_json_and_table(capsys, tmp_path, fake):
    write_spec(tmp_path / "s.yaml", TINY)
    code, out, _ = run_main(capsys, "describe", "s.yaml", "--json")
    data = json.loads(out)
    assert code == 0 and data["params_dense"] == 66_000_000 and data["params_nonzero"] == 21_780_000
    code, out, _ = run_main(capsys, "describe", "s.yaml")
    assert code == 0 and "21,780,000" in out and "rnn.weight_hh_l0" in out and "resolved spec" in out
    assert "emsize: 8" in out and "enabled: false" in out  # the resolved spec is shown


# ---- end to end on a slice of real PTB -----------------------------------------------------------

E2E = """\
name: e2e
seed: 11
device: cpu
data: {corpus: ptb, batch_size: 4, eval_batch_size: 4, bptt: 10, max_train_tokens: 3000,
       max_valid_tokens: 1000, max_test_tokens: 1000}
model: {type: lstm, emsize: 16, nhid: 16, nlayers: 2, dropout: 0.1}
sparse: {enabled: true, density: 0.5, death_rate: 0.5}
optim: {lr: 10}
train: {epochs: EPOCHS, log_interval: 20}
tracking: {wandb: {mode: MODE}}
"""


def e2e_spec(tmp_path: Path, epochs: int, mode: str = "disabled") -> Path:
    return write_spec(tmp_path / "e2e.yaml", E2E.replace("EPOCHS", str(epochs)).replace("MODE", mode))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    """One token cache for the end-to-end tests (tokenising PTB once, not per test)."""
    return tmp_path_factory.mktemp("token-cache")


def test_train_end_to_end_on_real_ptb(capsys, tmp_path, shared_data, token_cache, monkeypatch):
    monkeypatch.setenv("SELFISH_DATA", str(shared_data))
    monkeypatch.setenv("SELFISH_CACHE", str(token_cache))
    code, _, err = run_main(capsys, "train", str(e2e_spec(tmp_path, 2, "offline")), "--run-dir", "run", "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "run"
    for name in ("spec.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "wandb.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert summary["test_ppl"] > 1 and summary["best_val_ppl"] > 1 and 0.45 < summary["density"] < 0.55
    assert summary["params_dense"] > summary["params_nonzero"] > 0 and summary["flops"]["train_total"] > 0
    assert summary["wandb"]["mode"] == "offline" and summary["wandb"]["id"]
    types = [r["type"] for r in metrics(run_dir)]
    assert types[0] == "start" and types.count("epoch") == 2 and types[-2:] == ["test", "end"] and "step" in types
    assert list((run_dir / "wandb").glob(f"offline-run-*-{summary['wandb']['id']}/run-*.wandb"))
    code, out, _ = run_main(capsys, "eval", "run", "--json")
    assert code == 0 and json.loads(out)["test_ppl"] > 1


class KillAt:
    """A sink that interrupts the process (like Ctrl-C or a kill) when a given epoch record arrives."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def write(self, record: dict) -> None:
        if record["type"] == "epoch" and record["epoch"] == self.epoch:
            raise KeyboardInterrupt

    def close(self, status: str) -> None:
        pass


@pytest.mark.slow
def test_killed_train_resumes_to_the_same_numbers(capsys, tmp_path, shared_data, token_cache, monkeypatch):
    monkeypatch.setenv("SELFISH_DATA", str(shared_data))
    monkeypatch.setenv("SELFISH_CACHE", str(token_cache))
    spec = str(e2e_spec(tmp_path, 3))
    assert run_main(capsys, "train", spec, "--run-dir", "full", "--quiet")[0] == 0
    from selfish import tracking

    original = tracking.build_sinks
    monkeypatch.setattr(tracking, "build_sinks", lambda *a, **k: [*original(*a, **k), KillAt(2)])
    assert run_main(capsys, "train", spec, "--run-dir", "killed", "--quiet")[0] == 130
    monkeypatch.setattr(tracking, "build_sinks", original)
    code, _, err = run_main(capsys, "train", "--resume", "killed", "--quiet")
    assert code == 0, err
    full, resumed = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "killed"))
    assert resumed["status"] == "completed" and resumed["test_ppl"] == full["test_ppl"]
    assert resumed["best_val_ppl"] == full["best_val_ppl"]
    vals = {d: [r["val_ppl"] for r in metrics(tmp_path / d) if r["type"] == "epoch"] for d in ("full", "killed")}
    assert vals["killed"] == vals["full"] and len(vals["full"]) == 3


@pytest.mark.slow
def test_describe_paper_lstm_counts(capsys, shared_data, token_cache, monkeypatch):
    """Issue 3 "done": 66.0M dense and 21.78M non-zero for the README LSTM (builds the 66M model)."""
    monkeypatch.setenv("SELFISH_DATA", str(shared_data))
    monkeypatch.setenv("SELFISH_CACHE", str(token_cache))
    code, out, err = run_main(capsys, "describe", str(PAPER / "lstm_ptb.yaml"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["params_dense"] == 66_000_000
    assert abs(data["params_nonzero"] - 21_780_000) < 0.002 * 21_780_000  # Bernoulli masks: about 0.33


def test_sigterm_closes_the_run_folder(capsys, tmp_path, monkeypatch):
    import os
    import signal

    class Terminated(FakeExperiment):
        def run(self, spec, *, run_dir, sinks, **kwargs):
            for sink in sinks:
                sink.write({"type": "start", "step": 0, "epoch": 0, "resumed": False})
            os.kill(os.getpid(), signal.SIGTERM)  # like `timeout` or `kill`
            raise AssertionError("not reached")

    monkeypatch.setattr(runner, "_experiment", lambda: Terminated())
    write_spec(tmp_path / "s.yaml", TINY)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_main(capsys, "train", "s.yaml", "--run-dir", "r", "--quiet")
    assert code == 130 and "interrupted" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_bad_wandb_init_timeout_exits_2_naming_the_variable(capsys, monkeypatch, command):
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ("selfish.sweep.cli",))
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "soon")
    spec = REPO / ("experiments/cpu/demo.yaml" if command == "train" else "sweeps/cpu_density.yaml")
    code, _, err = run_main(capsys, command, str(spec))
    assert code == 2
    assert "WANDB_INIT_TIMEOUT=soon: must be a positive number of seconds" in err and "Traceback" not in err
    assert not Path("runs").exists()  # nothing started
