"""The benchmarks run end to end at tiny scale and write well-formed results (no timing thresholds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.common import case, interleaved, make_scale, markdown_table, paired_ratio, regenerate_readme
from benchmarks.run import BENCHMARKS, main, run_benchmark

CASE_FIELDS = {"case", "metric", "value", "baseline", "unit", "ratio", "ratio_means", "target", "meets_target",
               "details"}
MACHINE_FIELDS = {"cores", "threads", "torch", "date", "load_average"}


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _positive_finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def _check_result(result: dict, path: Path) -> None:
    on_disk = json.loads(path.read_text())
    assert on_disk["name"] == result["name"]
    assert MACHINE_FIELDS <= set(on_disk["machine"])
    assert on_disk["machine"]["torch"] == torch.__version__
    assert on_disk["scale"] == "tiny"
    assert "traceback" not in on_disk, on_disk.get("traceback")
    for row in on_disk["cases"]:
        assert CASE_FIELDS <= set(row), row
        for key in ("value", "baseline", "ratio"):
            assert _positive_finite(row[key]), (row["case"], key, row[key])
        assert row["meets_target"] in (True, False, None)


# Benchmarks whose every case must run at tiny scale.
FAST = ["training", "asgd", "mask_update", "flops", "corpus", "model_cells"]


@pytest.mark.parametrize("name", FAST)
def test_benchmark_tiny_writes_json_with_positive_finite_ratios(name: str, tmp_path: Path) -> None:
    result = run_benchmark(name, make_scale("tiny", threads=1), tmp_path)
    path = tmp_path / f"{result['name']}.json"
    assert path.is_file()
    assert result["cases"] and not result["skipped"], result["skipped"]  # every case of it ran
    _check_result(result, path)
    if name == "asgd":
        assert result["cases"][0]["details"]["optimizer"] == "SNTASGD"
        low, high = result["cases"][0]["details"]["ratio_ci95"]
        assert low <= result["cases"][0]["ratio"] <= high  # the ratio is the median of the paired rounds
    if name == "mask_update":
        details = result["cases"][0]["details"]
        assert details["maskable_weights"] > 0
        assert _positive_finite(details["back_to_back_s"]) and _positive_finite(details["first_update_of_run_s"])
        assert [c["case"] for c in result["cases"]] == ["2x32 (tiny) update (SGD phase)",
                                                        "2x32 (tiny) update (ASGD phase)"]


@pytest.mark.slow
def test_sweep_benchmark_tiny(tmp_path: Path) -> None:
    """Spawns a fresh worker process (imports torch and optuna: ~10 s)."""
    result = run_benchmark("sweep", make_scale("tiny", threads=1), tmp_path)
    assert result["cases"] and not result["skipped"], result["skipped"]
    _check_result(result, tmp_path / "sweep.json")
    trials = result["cases"][0]["details"]["trials"]
    assert len(trials) == 2 and all(t["to_first_forward"] <= t["to_first_step_end"] for t in trials)


def test_interleaved_alternates_order_and_skips_warmup() -> None:
    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0},
                        repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert times == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}


def test_readme_regenerated_from_all_json_files(tmp_path: Path) -> None:
    for name, ratio in (("alpha", 1.25), ("beta", 0.5)):
        row = case("c1", "s", value=1.0, baseline=ratio, unit="s", ratio=ratio, ratio_means="x", target=">= 1",
                   meets_target=ratio >= 1)
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"name": name, "title": name.upper(), "scale": "tiny", "machine": {}, "duration_s": 1.0,
             "cases": [row], "notes": ["n"], "skipped": ["s"]}))
    (tmp_path / "models.json").write_text(json.dumps({"threads": 2}))  # another schema: ignored
    text = regenerate_readme(tmp_path).read_text()
    assert text.index("ALPHA") < text.index("BETA")
    reordered = regenerate_readme(tmp_path, order=["beta"]).read_text()
    assert reordered.index("BETA") < reordered.index("ALPHA")
    assert "| c1 | 1 s | 1.25 s | 1.250 |" in text and "| c1 | 1 s | 500 ms | 0.500 |" in text
    assert "**no**" in text
    assert "not run: s" in markdown_table(json.loads((tmp_path / "alpha.json").read_text()))


def test_cli_only_quick_writes_results_and_readme(tmp_path: Path) -> None:
    assert main(["--only", "corpus", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert (tmp_path / "corpus.json").is_file()
    assert "corpus" in (tmp_path / "README.md").read_text()


def test_registry_names_match_modules() -> None:
    import importlib

    for name, module in BENCHMARKS.items():
        assert importlib.import_module(module).NAME == name


def test_interleaved_budget_adds_rounds_for_cheap_cases() -> None:
    times = interleaved({"a": lambda: 0.0, "b": lambda: 0.0}, repeats=2, budget_s=10.0, max_repeats=5)
    assert len(times["a"]) == len(times["b"]) == 5


def test_paired_ratio_cancels_a_shared_drift_and_brackets_the_median() -> None:
    # Load doubles half-way through: the ratio of medians is thrown off, the paired ratios are not.
    base = [1.0] * 5 + [2.0] * 6
    dense = [b * 0.99 for b in base]
    sparse = list(base)
    paired = paired_ratio(dense, sparse)
    assert paired["median"] == pytest.approx(0.99)
    assert paired["ci95"][0] <= paired["median"] <= paired["ci95"][1]
    assert paired["n"] == 11
    noisy = paired_ratio([1.0, 1.2, 0.9, 1.1], [1.0, 1.0, 1.0, 1.0])
    assert noisy["ci95"][0] < noisy["ci95"][1]
    assert paired_ratio([1.0, 1.2, 0.9, 1.1], [1.0, 1.0, 1.0, 1.0]) == noisy  # seeded: reproducible


def test_markdown_table_shows_the_paired_interval() -> None:
    row = case("x", "s", value=1.0, baseline=1.0, unit="s", ratio=0.99, ratio_means="r", ratio_ci95=[0.97, 1.01])
    table = markdown_table({"name": "n", "title": "t", "cases": [row]})
    assert "0.990 [0.970, 1.010]" in table


def test_rhn_matmul_floor_lists_exactly_the_products_of_a_training_step() -> None:
    """The floor's (count, m, k, n) list equals the mm/addmm calls the profiler sees in one fast RHN step."""
    from collections import Counter

    import torch.nn.functional as F
    from torch.profiler import profile

    from benchmarks.bench_model_cells import TINY_CONFIGS, rhn_step_matmuls
    from selfish.models import build_model

    for options in (TINY_CONFIGS["rhn"], {**TINY_CONFIGS["rhn"], "couple": False, "tied": False, "emsize": 12}):
        torch.manual_seed(0)
        model = build_model("rhn", 50, **options)
        model.train()
        tokens = torch.randint(0, 50, (8, 3))
        with profile(record_shapes=True) as prof:
            out = model(tokens[:-1], model.init_hidden(3))
            F.cross_entropy(out.logits, tokens[1:].reshape(-1)).backward()
        seen: Counter = Counter()
        for event in prof.events():
            if event.name in ("aten::mm", "aten::addmm"):
                shapes = event.input_shapes
                a, b = (shapes[0], shapes[1]) if event.name == "aten::mm" else (shapes[1], shapes[2])
                seen[(a[0], a[1], b[1])] += 1
        expected: Counter = Counter()
        for count, m, k, n in rhn_step_matmuls(50, batch_size=3, bptt=7, **options):
            expected[(m, k, n)] += count
        assert seen == expected, options
