"""End to end for RHN, ON-LSTM and AWD-LSTM-MoS (issue 5) through the runner, on the real corpora.

- `selfish describe` on every paper spec of the three models; the sparse ones match the spec's table
  (RHN 23.46M maskable / 11.07M non-zero at 0.472, ON-LSTM 25.2M / 11.34M at 0.45; MoS: the count of
  its non-bias weights, 34.85M, at 0.45). These build the full-size models: marked slow.
- Each CPU-scale spec (`experiments/cpu/`) trains a few steps on PTB / WikiText-2 into a complete run
  folder with finite perplexities and sparse masks in `last.pt`.
- Bitwise resume per model: 2 short epochs in one go == 1 epoch, interrupted, then `--resume`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import runner
from selfish.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
PAPER, CPU = REPO / "experiments" / "paper", REPO / "experiments" / "cpu"
CPU_SPECS = {"rhn": "rhn_ptb", "onlstm": "onlstm_ptb", "mos": "mos_wt2"}
# A few steps on short validation / test slices; W&B off.
FEW_STEPS = ["train.epochs=1", "train.max_steps_per_epoch=3", "train.log_interval=1",
             "data.max_valid_tokens=2000", "data.max_test_tokens=2000", "tracking.wandb.mode=disabled"]
# Tiny sizes for the two-epoch resume runs (the spec's other settings, sparse ones included, stay).
TINY = {
    "rhn": ["model.emsize=24", "model.nhid=24", "model.recurrence_depth=2"],
    "onlstm": ["model.emsize=20", "model.nhid=30", "model.chunk_size=10"],
    "mos": ["model.emsize=16", "model.nhid=24", "model.nhidlast=16", "model.n_experts=2", "data.batch_size=5",
            "data.bptt=20"],  # the 33,278-word softmax of every expert is the cost
}


def sets(*groups: list[str]) -> list[str]:
    return [arg for group in groups for item in group for arg in ("--set", item)]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = runner.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    """One token cache for the module (each corpus is tokenised once)."""
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, shared_data, token_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "EXTENSION_MODULES", ())
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SELFISH_DATA", str(shared_data))
    monkeypatch.setenv("SELFISH_CACHE", str(token_cache))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def describe(capsys, spec: Path) -> dict:
    code, out, err = run_main(capsys, "describe", str(spec), "--json", "--threads", "1")
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------ describe


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec, maskable, nonzero, density",
    [("rhn_ptb", 23.46e6, 11.07e6, 0.472), ("onlstm_ptb_1000", 25.2e6, 11.34e6, 0.45),
     ("onlstm_ptb_1300", 25.2e6, 11.34e6, 0.45)],
)
def test_describe_paper_counts_match_the_table(capsys, spec, maskable, nonzero, density):
    info = describe(capsys, PAPER / f"{spec}.yaml")
    digits = 2 if spec.startswith("rhn") else 1  # the table gives 23.46M and 25.2M
    assert round(info["params_dense"] / 1e6, digits) == round(maskable / 1e6, digits)
    assert round(info["params_nonzero"] / 1e6, 2) == round(nonzero / 1e6, 2)  # Bernoulli masks: about
    assert abs(info["density"] - density) < 0.002


@pytest.mark.slow
def test_describe_paper_mos(capsys):
    """MoS WT2 (emsize 300, 1150/1150/650, 15 experts, vocab 33,278): every non-bias weight is maskable."""
    info = describe(capsys, PAPER / "mos_wt2.yaml")
    vocab, em, h, last, experts = 33278, 300, 1150, 650, 15
    weights = (vocab * em  # encoder = tied decoder
               + 4 * h * em + 4 * h * h + 4 * h * h + 4 * h * h + 4 * last * h + 4 * last * last  # ih, hh
               + experts * last + experts * em * last)  # prior, latent
    assert info["params_dense"] == weights == 34_848_150
    assert abs(info["density"] - 0.45) < 0.002
    assert abs(info["params_nonzero"] - 0.45 * weights) < 0.002 * weights


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["rhn_ptb_dense", "onlstm_ptb_dense", "mos_wt2_dense"])
def test_describe_paper_dense(capsys, spec):
    info = describe(capsys, PAPER / f"{spec}.yaml")
    assert info["params_nonzero"] == info["params_dense"] > 20e6 and info["density"] == 1.0


@pytest.mark.parametrize("spec", sorted(CPU_SPECS.values()))
def test_describe_cpu_specs(capsys, spec):
    sparse, dense = describe(capsys, CPU / f"{spec}.yaml"), describe(capsys, CPU / f"{spec}_dense.yaml")
    paper = load_spec(CPU / f"{spec}.yaml")
    assert sparse["params_dense"] == dense["params_dense"] == dense["params_nonzero"]
    assert abs(sparse["density"] - paper.sparse.density) < 0.01
    assert sparse["params_nonzero"] < 0.5 * sparse["params_dense"]


# ------------------------------------------------------------------------------------------ training


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.pt", weights_only=True)


def assert_masks_sparse(state: dict, density: float) -> None:
    """Every masked weight is 0 where its mask is off, and the masks hold about `density` of the weights."""
    masks = state["masking"]["masks"]
    assert masks
    weights = state["model"]
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == weights[name].shape
        assert torch.count_nonzero(weights[name][~mask]) == 0, name
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs(kept / total - density) < 0.02


@pytest.mark.parametrize("model", sorted(CPU_SPECS))
def test_cpu_spec_trains_on_the_real_corpus(capsys, tmp_path, model):
    spec = CPU / f"{CPU_SPECS[model]}.yaml"
    code, _, err = run_main(capsys, "train", str(spec), *sets(FEW_STEPS), "--run-dir", "run", "--quiet",
                            "--threads", "1")
    assert code == 0, err
    run_dir = tmp_path / "run"
    for name in ("spec.yaml", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 1
    for key in ("best_val_ppl", "test_ppl"):
        assert math.isfinite(summary[key]) and summary[key] > 1, key
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "step"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    state = checkpoint(run_dir)
    assert state["spec"]["model"]["type"] == model
    assert_masks_sparse(state, load_spec(spec).sparse.density)


@pytest.mark.parametrize("model", sorted(CPU_SPECS))
def test_resume_is_bitwise(capsys, tmp_path, monkeypatch, model):
    """2 epochs of 3 steps in one run == the same run interrupted after epoch 1 and resumed."""
    from selfish import tracking

    spec = str(CPU / f"{CPU_SPECS[model]}.yaml")
    args = sets(FEW_STEPS, ["train.epochs=2"], TINY[model])
    assert run_main(capsys, "train", spec, *args, "--run-dir", "full", "--quiet", "--threads", "1")[0] == 0

    class InterruptAtEpoch2:
        """Like Ctrl-C after epoch 2's record is out but before its checkpoint: last.pt holds epoch 1."""

        def write(self, record: dict) -> None:
            if record["type"] == "epoch" and record["epoch"] == 2:
                raise KeyboardInterrupt

        def close(self, status: str) -> None:
            pass

    original = tracking.build_sinks
    monkeypatch.setattr(tracking, "build_sinks", lambda *a, **k: [*original(*a, **k), InterruptAtEpoch2()])
    assert run_main(capsys, "train", spec, *args, "--run-dir", "cut", "--quiet", "--threads", "1")[0] == 130
    assert checkpoint(tmp_path / "cut")["loop"]["epoch"] == 1
    monkeypatch.setattr(tracking, "build_sinks", original)
    code, _, err = run_main(capsys, "train", "--resume", "cut", "--quiet", "--threads", "1")
    assert code == 0, err

    full, resumed = checkpoint(tmp_path / "full"), checkpoint(tmp_path / "cut")
    assert full["loop"]["epoch"] == resumed["loop"]["epoch"] == 2
    assert full["model"].keys() == resumed["model"].keys()
    for name, value in full["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    for name, mask in full["masking"]["masks"].items():
        assert torch.equal(mask, resumed["masking"]["masks"][name]), name
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "cut")]
    assert summaries[0]["test_ppl"] == summaries[1]["test_ppl"] and math.isfinite(summaries[0]["test_ppl"])
