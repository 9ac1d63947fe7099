"""selfish.sparse: the three-step recipe on a model outside the library, modes, state, gates, counts."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfish import CosineDecay, Masking
from selfish.sparse import (
    DEATHS,
    GROWTHS,
    INITS,
    REDISTRIBUTIONS,
    GrowthInputs,
    layer_densities,
    make_decay,
    make_redistribution,
    nominal_nonzeros,
    select_parameters,
)
from selfish.sparse.criteria import equal_shares
from selfish.sparse.redistribution import TensorCounts

VOCAB = 40


class TinyGRULM(nn.Module):
    """A GRU language model that is not part of the library (embedding, nn.GRU, linear decoder)."""

    def __init__(self, vocab: int = VOCAB, emb: int = 12, hidden: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.gru = nn.GRU(emb, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embedding(tokens))
        return self.decoder(out).view(-1, self.decoder.out_features)


class TinyLSTMLM(nn.Module):
    def __init__(self, vocab: int = VOCAB, emb: int = 12, hidden: int = 16, tied: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden if tied else emb)
        self.rnn = nn.LSTM(hidden if tied else emb, hidden, 1)
        self.decoder = nn.Linear(hidden, vocab)
        if tied:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.encoder(tokens))
        return self.decoder(out).view(-1, self.decoder.out_features)


def train_steps(model: nn.Module, mask: Masking, optimizer: torch.optim.Optimizer, steps: int, seed: int = 0,
                clip: float | None = 0.25) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, VOCAB, (6, 3), generator=gen)
        targets = torch.randint(0, VOCAB, (18,), generator=gen)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(tokens), targets)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        mask.step()


def assert_masked_zero(mask: Masking) -> None:
    for name, m in mask.masks.items():
        assert torch.all(mask.params[name].detach()[~m] == 0), name


def test_three_step_recipe_on_a_gru_lm():
    torch.manual_seed(0)
    model = TinyGRULM()
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0, weight_decay=1.2e-6)
    steps_per_epoch, epochs = 4, 2
    # (1) the original README's three steps
    decay = CosineDecay(0.5, 25 * steps_per_epoch)  # T_max = epochs * batches as in the original
    mask = Masking(optimizer, death_rate=0.5, death_mode="magnitude", death_rate_decay=decay,
                   growth_mode="random", redistribution_mode="none", model="GRU")
    mask.add_module(model, sparse_init="uniform", density=0.3)

    assert set(mask.masks) == {"embedding.weight", "decoder.weight", *(
        f"gru.weight_{k}_l{i}" for k in ("ih", "hh") for i in range(2))}
    biases = {n: p.detach().clone() for n, p in model.named_parameters() if "bias" in n}
    start_density = mask.density()
    assert 0.2 < start_density < 0.4
    assert_masked_zero(mask)

    for epoch in range(epochs):
        train_steps(model, mask, optimizer, steps_per_epoch, seed=epoch)  # (2) mask.step()
        assert_masked_zero(mask)
        stats = mask.at_end_of_epoch()  # (3)
        assert_masked_zero(mask)
        d = stats.to_dict()
        assert d["update"] == epoch + 1 and d["step"] == (epoch + 1) * steps_per_epoch
        assert d["death_rate"] == pytest.approx(decay.get_dr())
        for name, entry in d["tensors"].items():
            assert entry["nonzero_after"] == int(mask.masks[name].sum())
            assert entry["removed"] == math.ceil(d["death_rate"] * entry["nonzero_before"] - 1e-9)  # spec §3.2
            assert entry["regrown"] >= entry["regrown_just_removed"] >= 0
            # redistribution none + Bernoulli growth: back to the baseline within 6 sigma
            assert abs(entry["nonzero_after"] - mask.baseline[name]) <= 6 * entry["regrown"] ** 0.5 + 2
        gates = d["gates"]
        assert set(gates) == {f"gru.weight_{k}_l{i}" for k in ("ih", "hh") for i in range(2)}
        for name, per_gate in gates.items():
            assert list(per_gate) == ["r", "z", "n"]
            assert sum(g["nonzero_after"] for g in per_gate.values()) == d["tensors"][name]["nonzero_after"]
            assert sum(g["numel"] for g in per_gate.values()) == mask.masks[name].numel()
        total = d["total"]
        assert total["numel"] == sum(m.numel() for m in mask.masks.values())
        assert total["density"] == pytest.approx(mask.density())
        assert 0 < total["turnover"] <= 1
        assert total["exploration_rate"] == pytest.approx(mask.exploration_rate())
    assert mask.exploration_rate() > start_density
    for n, p in model.named_parameters():
        if "bias" in n:
            assert torch.count_nonzero(p) == p.numel(), n
            assert not torch.equal(p.detach(), biases[n]), f"{n} was not trained"


def build(death="magnitude", growth="random", redistribution="none", init="uniform", optimizer="sgd",
          density=0.3, model=None, **kwargs):
    torch.manual_seed(1)
    model = model or TinyLSTMLM()
    if optimizer == "momentum":
        opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
    mask = Masking(opt, death_rate=0.5, death_mode=death, growth_mode=growth, redistribution_mode=redistribution,
                   death_rate_decay=CosineDecay(0.5, 100), **kwargs)
    mask.add_module(model, density=density, sparse_init=init)
    return model, opt, mask


@pytest.mark.parametrize("death,growth,redistribution", [
    *((d, "random", "none") for d in DEATHS),
    *(("magnitude", g, "none") for g in GROWTHS),
    *(("magnitude", "random", r) for r in REDISTRIBUTIONS),
    ("magnitude_rnn", "random_rnn", "none"),
])
@pytest.mark.parametrize("growth_count", ["bernoulli", "exact"])
def test_every_mode_runs_and_keeps_invariants(death, growth, redistribution, growth_count):
    model, opt, mask = build(death, growth, redistribution, optimizer="momentum", growth_count=growth_count)
    for update in range(2):
        train_steps(model, mask, opt, 3, seed=update)
        before = {n: m.clone() for n, m in mask.masks.items()}
        stats = mask.at_end_of_epoch()
        assert_masked_zero(mask)
        for n, m in mask.masks.items():
            entry = stats.tensors[n]
            assert entry["nonzero_before"] == int(before[n].sum())
            assert entry["nonzero_after"] == int(m.sum())
            assert entry["nonzero_after"] == entry["nonzero_before"] - entry["removed"] + entry["regrown"]
            changed = int((m ^ before[n]).sum())
            assert changed == entry["removed"] + entry["regrown"] - 2 * entry["regrown_just_removed"]
            if redistribution == "none" and growth_count == "exact":
                assert entry["nonzero_after"] == mask.baseline[n]
        if redistribution != "none":  # the total stays close to the baseline total
            base = sum(mask.baseline.values())
            assert abs(stats.total["nonzero_after"] - base) <= 0.1 * base


@pytest.mark.parametrize("init", list(INITS))
def test_every_init_runs(init):
    model, opt, mask = build(init=init, density=0.4)
    assert_masked_zero(mask)
    assert 0.25 < mask.density() < 0.55
    train_steps(model, mask, opt, 2)
    mask.at_end_of_epoch()
    assert_masked_zero(mask)


@pytest.mark.parametrize("kwargs,word", [
    ({"death_mode": "magnitud"}, "magnitude_rnn"),
    ({"growth_mode": "rigl"}, "gradient"),
    ({"redistribution_mode": "all"}, "nonzeros"),
    ({"growth_count": "poisson"}, "exact"),
])
def test_unknown_names_are_rejected_with_the_allowed_ones(kwargs, word):
    opt = torch.optim.SGD(TinyLSTMLM().parameters(), lr=1.0)
    with pytest.raises(ValueError, match=word):
        Masking(opt, **kwargs)


def test_unknown_init_and_decay_rejected():
    model = TinyLSTMLM()
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    with pytest.raises(ValueError, match="ERK"):
        mask.add_module(model, sparse_init="lottery")
    with pytest.raises(ValueError, match="cosine"):
        make_decay("exponential", 0.5, 10)


@pytest.mark.parametrize("mode", [{"growth_mode": "momentum"}, {"redistribution_mode": "momentum"}])
def test_momentum_modes_need_momentum_at_construction(mode):
    model = TinyLSTMLM()
    with pytest.raises(ValueError, match="momentum"):
        Masking(torch.optim.SGD(model.parameters(), lr=1.0), **mode)
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9), **mode)
    with pytest.raises(ValueError, match="momentum"):
        mask.set_optimizer(torch.optim.SGD(model.parameters(), lr=1.0))
    Masking(torch.optim.Adam(model.parameters()), **mode)  # Adam's first moment counts


def test_momentum_growth_with_adam_runs():
    model, opt, mask = build(growth="momentum", optimizer="adam", growth_count="exact")
    train_steps(model, mask, opt, 3)
    stats = mask.at_end_of_epoch()
    assert_masked_zero(mask)
    assert stats.total["nonzero_after"] == sum(mask.baseline.values())


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("death,growth,redistribution", [
    ("magnitude", "random", "none"), ("threshold", "random", "nonzeros"), ("SET", "random_rnn", "momentum"),
])
def test_state_dict_roundtrip_gives_a_bitwise_identical_next_update(death, growth, redistribution):
    model, opt, mask = build(death, growth, redistribution, optimizer="momentum")
    train_steps(model, mask, opt, 3)
    mask.at_end_of_epoch()
    train_steps(model, mask, opt, 2, seed=5)
    saved = _roundtrip({"model": model.state_dict(), "opt": opt.state_dict(), "mask": mask.state_dict()})

    expected = mask.at_end_of_epoch().to_dict()
    expected_masks = {n: m.clone() for n, m in mask.masks.items()}
    expected_weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    model2, opt2, mask2 = build(death, growth, redistribution, optimizer="momentum", model=TinyLSTMLM())
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    mask2.load_state_dict(saved["mask"])
    assert mask2.death_rate == mask.decay.value_at(saved["mask"]["decay"]["t"])
    got = mask2.at_end_of_epoch().to_dict()
    assert got == expected
    for n in expected_masks:
        assert torch.equal(mask2.masks[n], expected_masks[n])
    for n, p in model2.named_parameters():
        assert torch.equal(p.detach(), expected_weights[n]), n


def test_state_dict_holds_plain_values_only():
    _, _, mask = build(death="threshold")
    state = mask.state_dict()
    assert state["death"]["threshold"] == pytest.approx(1e-3)
    loaded = _roundtrip(state)
    assert set(loaded) >= {"masks", "ever_active", "baseline", "update_index", "steps", "decay"}


def test_same_seed_same_masks_different_seed_different():
    a = build(seed=3)[2].masks
    b = build(seed=3)[2].masks
    c = build(seed=4)[2].masks
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def _gate_scaled_lstm() -> TinyLSTMLM:
    """LSTM whose input gate weights are 20x larger: magnitude death over the whole tensor spares them."""
    torch.manual_seed(2)
    model = TinyLSTMLM(hidden=32)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0"):
            getattr(model.rnn, name)[:32] *= 20.0
    return model


@pytest.mark.parametrize("death,growth,drifts", [
    ("magnitude", "random", True), ("magnitude_rnn", "random_rnn", False),
])
def test_cell_weight_redistribution_vs_per_gate(death, growth, drifts):
    model = _gate_scaled_lstm()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mask = Masking(opt, death_rate=0.5, death_mode=death, growth_mode=growth, growth_count="exact")
    mask.add_module(model, density=0.3)
    start = mask.snapshot()["gates"]["rnn.weight_hh_l0"]
    for _ in range(3):
        stats = mask.at_end_of_epoch()
        with torch.no_grad():  # grown weights get values so the next death sees them
            for n, p in mask.params.items():
                p.add_(torch.randn_like(p) * 0.01 * mask.masks[n])
    end = stats.gates["rnn.weight_hh_l0"]
    input_gate_gain = end["i"]["density"] - start["i"]["density"]
    if drifts:
        assert input_gate_gain > 0.1
        assert end["f"]["density"] < start["f"]["density"] - 0.03
    else:
        mean = sum(start[g]["nonzero"] for g in "ifgo") / 4
        for gate in "ifgo":
            assert abs(end[gate]["density"] - start[gate]["density"]) < 0.03
            # equal regrowth shares only pull a gate towards the mean gate count, never past it
            assert abs(end[gate]["nonzero_after"] - start[gate]["nonzero"]) <= abs(start[gate]["nonzero"] - mean) + 4
    assert stats.tensors["rnn.weight_hh_l0"]["nonzero_after"] == mask.baseline["rnn.weight_hh_l0"]


def test_lstm_2x1500_nominal_count_on_meta():
    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(10000, 1500)
            self.rnn = nn.LSTM(1500, 1500, 2)
            self.decoder = nn.Linear(1500, 10000)

    with torch.device("meta"):
        model = Big()
    shapes = {n: tuple(p.shape) for n, p in select_parameters(model).items()}
    assert sorted(shapes) == ["decoder.weight", "encoder.weight", "rnn.weight_hh_l0", "rnn.weight_hh_l1",
                              "rnn.weight_ih_l0", "rnn.weight_ih_l1"]
    numel = sum(a * b for a, b in shapes.values())
    assert numel == 66_000_000
    dens = layer_densities(shapes, 0.33, "uniform")
    assert nominal_nonzeros(shapes, dens) == pytest.approx(21_780_000)
    er = layer_densities(shapes, 0.33, "ER")  # spec §2.4: ~0.315 enc/dec, ~0.343 LSTM matrices
    assert er["encoder.weight"] == pytest.approx(0.315, abs=0.002)
    assert er["rnn.weight_hh_l0"] == pytest.approx(0.343, abs=0.002)
    assert nominal_nonzeros(shapes, er) == pytest.approx(21_780_000, abs=5)


def test_erk_densifies_small_layers_and_keeps_the_budget():
    shapes = {"big": (1000, 1000), "thin": (1000, 2), "mid": (200, 300)}
    dens = layer_densities(shapes, 0.2, "ERK")
    assert dens["thin"] == 1.0
    assert all(0 < d <= 1 for d in dens.values())
    total = sum(a * b for a, b in shapes.values())
    assert nominal_nonzeros(shapes, dens) == pytest.approx(0.2 * total, rel=1e-9)
    assert dens["mid"] > dens["big"]


def test_tied_weights_get_one_mask_and_biases_stay_dense():
    model = TinyLSTMLM(tied=True)
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask.add_module(model, density=0.3)
    assert "encoder.weight" in mask.masks and "decoder.weight" not in mask.masks
    assert model.decoder.weight is model.encoder.weight
    assert all("bias" not in n for n in mask.masks)


def test_include_exclude_globs():
    model = TinyLSTMLM()
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask.add_module(model, density=0.3, exclude=["encoder.*", "decoder.*"])
    assert set(mask.masks) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0"}
    mask2 = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask2.add_module(model, density=0.3, include=["rnn.*"])
    assert set(mask2.masks) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0"}  # biases are 1-D: never masked


class DeclaredGates(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(8, 10)
        self.hw = nn.Linear(8, 6)
        self.plain = nn.Linear(8, 5)

    def gate_layout(self):
        return {"cell.weight": [("master_f", 2), ("master_i", 2), ("o", 3), ("g", 3)], "hw.weight": 2}


def test_gate_layouts_from_modules_and_override():
    model = DeclaredGates()
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask.add_module(model, density=0.5)
    assert [b.name for b in mask.blocks["cell.weight"]] == ["master_f", "master_i", "o", "g"]
    assert [b.name for b in mask.blocks["hw.weight"]] == ["H", "T"]
    assert [b.name for b in mask.blocks["plain.weight"]] == ["0"]
    snap = mask.snapshot()
    assert set(snap["gates"]) == {"cell.weight", "hw.weight"}
    assert snap["gates"]["cell.weight"]["o"]["numel"] == 24

    mask2 = Masking(torch.optim.SGD(model.parameters(), lr=1.0), gate_layout={"plain.weight": 5, "hw.weight": 3})
    mask2.add_module(model, density=0.5)
    assert len(mask2.blocks["plain.weight"]) == 5 and [b.name for b in mask2.blocks["hw.weight"]] == list("rzn")
    with pytest.raises(ValueError, match="equal blocks"):
        Masking(torch.optim.SGD(model.parameters(), lr=1.0), gate_layout={"plain.weight": 2}).add_module(model)
    with pytest.raises(ValueError, match="unknown parameters"):
        Masking(torch.optim.SGD(model.parameters(), lr=1.0), gate_layout={"nope.weight": 2}).add_module(model)


def test_lstm_weights_default_to_ifgo():
    _, _, mask = build()
    assert [b.name for b in mask.blocks["rnn.weight_ih_l0"]] == list("ifgo")
    assert [b.name for b in mask.blocks["encoder.weight"]] == ["0"]


def test_update_every_updates_inside_step():
    model, opt, mask = build(update_every=2)
    train_steps(model, mask, opt, 5)
    assert mask.update_index == 2
    assert mask.last_stats is not None and mask.last_stats.step == 4
    assert mask.at_end_of_epoch() is None
    assert mask.update_index == 2


def test_momentum_buffers_zeroed_where_weights_appear_or_vanish():
    model, opt, mask = build(optimizer="momentum", growth_count="exact")
    train_steps(model, mask, opt, 3)
    before = {n: m.clone() for n, m in mask.masks.items()}
    weights = {n: p.detach().clone() for n, p in mask.params.items()}
    mask.at_end_of_epoch()
    for n, new in mask.masks.items():
        buf = opt.state[mask.params[n]]["momentum_buffer"]
        kept = before[n] & new
        assert torch.all(buf[~kept] == 0), n
        assert torch.count_nonzero(buf[kept]) > 0
        w = mask.params[n].detach()
        assert torch.equal(w[kept], weights[n][kept])  # survivors and removed-then-regrown keep their value
        assert torch.all(w[new & ~before[n]] == 0)  # newly grown start at 0


class FakeMaskAware(torch.optim.SGD):
    """A stand-in for selfish.optim's mask-aware optimizers: records set_masks calls, does not mask."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.received = []

    def set_masks(self, masks):
        self.received.append({id(p): m for p, m in masks.items()})


def test_mask_aware_optimizer_gets_masks_and_no_extra_pass():
    model = TinyLSTMLM()
    opt = FakeMaskAware(model.parameters(), lr=1.0)
    mask = Masking(opt, death_rate=0.5)
    mask.add_module(model, density=0.3)
    assert len(opt.received) == 1
    assert set(opt.received[0]) == {id(p) for p in mask.params.values()}
    train_steps(model, mask, opt, 1)
    leaked = sum(int(torch.count_nonzero(p.detach()[~mask.masks[n]])) for n, p in mask.params.items())
    assert leaked > 0  # Masking.step left masking to the (fake) mask-aware optimizer
    mask.at_end_of_epoch()
    assert len(opt.received) == 2
    for n, p in mask.params.items():
        assert opt.received[1][id(p)] is mask.masks[n]
    plain = torch.optim.SGD(model.parameters(), lr=1.0)
    mask.set_optimizer(plain)
    other = FakeMaskAware(model.parameters(), lr=1.0)
    mask.optimizer = other  # the original assigned the attribute; that also pushes the masks
    assert len(other.received) == 1


def test_gradient_growth_takes_the_largest_gradients():
    torch.manual_seed(0)
    param = nn.Parameter(torch.zeros(50, 40))
    param.grad = torch.randn(50, 40)
    candidates = torch.rand(50, 40) < 0.6
    inputs = GrowthInputs(param, lambda: torch.zeros(50, 40), torch.Generator().manual_seed(0), exact=True)
    grown = GROWTHS["gradient"]().grow(candidates, int(candidates.sum()), 300, [], inputs)
    assert int(grown.sum()) == 300 and not (grown & ~candidates).any()
    score = param.grad.abs()
    assert score[grown].min() >= score[candidates & ~grown].max()


def test_gradient_growth_in_an_update_counts_exactly():
    model, opt, mask = build(growth="gradient", growth_count="exact")
    train_steps(model, mask, opt, 2)
    stats = mask.at_end_of_epoch()
    assert stats.total["nonzero_after"] == sum(mask.baseline.values())
    assert_masked_zero(mask)


def test_gradient_growth_without_grad_is_a_clear_error():
    model, opt, mask = build(growth="gradient")
    with pytest.raises(ValueError, match="grad"):
        mask.at_end_of_epoch()


def test_set_death_removes_both_signs_near_zero():
    weight = torch.tensor([[-3.0, -0.1, -0.2, 0.05, 0.3, 2.0, -1.0, 0.5]])
    model = nn.Module()
    model.w = nn.Parameter(weight.clone())
    mask = Masking(torch.optim.SGD(model.parameters(), lr=0.0), death_rate=0.5, death_mode="SET",
                   growth_mode="random", growth_count="exact")
    mask.add_module(model, density=1.0)
    after = mask.death.prune(model.w, mask.masks["w"], 8, 0.5, mask.blocks["w"], torch.Generator())
    removed = (~after).nonzero()[:, 1].tolist()
    assert sorted(removed) == [1, 2, 3, 4]  # -0.1, -0.2 (negatives closest to 0), 0.05, 0.3


def test_threshold_adapts_tau():
    model, opt, mask = build(death="threshold")
    train_steps(model, mask, opt, 2)
    tau = mask.death.threshold
    mask.at_end_of_epoch()  # tiny tau removes far fewer than expected: tau doubles
    assert mask.death.threshold == 2 * tau
    assert mask.state_dict()["death"]["threshold"] == 2 * tau


def test_snapshot_shape():
    _, _, mask = build()
    snap = mask.snapshot()
    assert set(snap) == {"update", "step", "death_rate", "total", "tensors", "gates"}
    assert snap["total"]["density"] == pytest.approx(mask.density())
    assert set(snap["gates"]["rnn.weight_ih_l0"]) == set("ifgo")
    assert snap["total"]["exploration_rate"] == pytest.approx(mask.density())


def test_decay_schedules():
    p0, T = 0.8, 132_797
    cos = CosineDecay(p0, T)
    assert cos.get_dr() == pytest.approx(p0)
    for epoch, expected in [(1, 0.800), (10, 0.781), (50, 0.403), (100, 0.005)]:  # spec §4
        assert cos.value_at(epoch * 1328) == pytest.approx(expected, abs=1e-3)
    assert cos.value_at(2 * T) == pytest.approx(p0)  # periodic
    lin = make_decay("linear", 0.5, 10, 0.1)
    assert [round(lin.value_at(t), 6) for t in (0, 5, 10, 20)] == [0.5, 0.3, 0.1, 0.1]
    const = make_decay("constant", 0.3, 10)
    for _ in range(7):
        const.step()
        cos.step()
    assert const.get_dr() == 0.3
    fresh = CosineDecay(0.1, 5)
    fresh.load_state_dict(_roundtrip(cos.state_dict()))
    assert fresh.get_dr() == cos.get_dr() and fresh.t == 7


def test_masking_steps_the_decay_and_reports_the_rate():
    model, opt, mask = build()
    train_steps(model, mask, opt, 3)
    assert mask.decay.t == 3 and mask.steps == 3
    assert mask.death_rate == pytest.approx(CosineDecay(0.5, 100).value_at(3))


def test_all_mode_combinations_are_registered():
    assert list(DEATHS) == ["magnitude", "magnitude_rnn", "SET", "threshold"]
    assert list(GROWTHS) == ["random", "random_rnn", "gradient", "momentum"]
    assert list(REDISTRIBUTIONS) == ["none", "magnitude", "nonzeros", "momentum"]
    assert list(itertools.islice(INITS, 3)) == ["uniform", "ER", "ERK"]


def test_invariant_checks_do_not_change_results():
    results = []
    for check in (True, False):
        model, opt, mask = build(check_invariants=check, growth_count="exact")
        train_steps(model, mask, opt, 3)
        results.append((mask.at_end_of_epoch().to_dict(), {n: m.clone() for n, m in mask.masks.items()}))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(results[0][1][n], results[1][1][n]) for n in results[0][1])


def test_equal_shares_respect_room_and_total():
    gen = torch.Generator().manual_seed(0)
    assert sorted(equal_shares(10, [100, 100, 100, 100], gen)) == [2, 2, 3, 3]
    shares = equal_shares(10, [1, 100, 0, 100], gen)
    assert shares[0] == 1 and shares[2] == 0 and sorted(shares[1::2]) == [4, 5]
    shares = equal_shares(50, [3, 4, 5, 100], gen)
    assert shares[:3] == [3, 4, 5] and sum(shares) == 50


def test_proportional_redistribution_caps_and_spreads():
    red = make_redistribution("magnitude")
    counts = {"a": TensorCounts(numel=100, nonzero_before=90, nonzero_after_death=45, baseline=90),
              "b": TensorCounts(numel=1000, nonzero_before=300, nonzero_after_death=150, baseline=300)}
    regrow = red.regrow(counts, {"a": 100.0, "b": 1.0})  # "a" wants nearly everything but has 55 free slots
    assert regrow["a"] <= int(0.99 * counts["a"].candidates)
    removed = counts["a"].removed + counts["b"].removed
    assert removed - 2 <= regrow["a"] + regrow["b"] <= removed + 2  # the overflow moves, it is not created
    red.end_update(counts, {"a": 99, "b": 290})
    assert red.adjusted_growth == pytest.approx(0.75 * 1 + 1)  # 0.25*0 + 0.75*residual + mean(residuals)


@pytest.mark.parametrize("scores", [{"a": 100.0, "b": 1.0, "c": 1.0}, {"a": 50.0, "b": 50.0, "c": 0.01},
                                    {"a": 1.0, "b": 1.0, "c": 1.0}])
def test_proportional_redistribution_conserves_the_regrowth_total_when_capping(scores):
    # Regression: the overflow of a capped tensor was added again at every pass, so the others regrew
    # almost all of their zeros (SNFS went from density 0.33 to 0.99 in one update).
    red = make_redistribution("momentum")
    counts = {"a": TensorCounts(numel=300, nonzero_before=267, nonzero_after_death=106, baseline=267),
              "b": TensorCounts(numel=1024, nonzero_before=337, nonzero_after_death=134, baseline=337),
              "c": TensorCounts(numel=1024, nonzero_before=325, nonzero_after_death=129, baseline=325)}
    regrow = red.regrow(counts, scores)
    removed = sum(c.removed for c in counts.values())
    assert abs(sum(regrow.values()) - removed) <= len(counts)  # only per-tensor rounding
    for name, c in counts.items():
        assert 0 <= regrow[name] <= 0.99 * c.candidates


def test_er_init_follows_the_set_formula():
    model = TinyLSTMLM(vocab=200, emb=16, hidden=16)
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask.add_module(model, density=0.2, sparse_init="ER")
    dens = mask.target_density
    # q_l = eps (r + c) / (r c): the thin 64x16 LSTM matrices get a higher density than the 200x16 tables
    assert dens["rnn.weight_hh_l0"] > dens["encoder.weight"]
    ratio = dens["rnn.weight_hh_l0"] / dens["encoder.weight"]
    assert ratio == pytest.approx((80 / 1024) / (216 / 3200))


def test_momentum_growth_rejects_masked_params_in_a_group_without_momentum():
    model = TinyLSTMLM()
    opt = torch.optim.SGD([{"params": model.rnn.parameters(), "momentum": 0.9},
                           {"params": [*model.encoder.parameters(), *model.decoder.parameters()]}], lr=1.0)
    mask = Masking(opt, growth_mode="momentum")  # one group has momentum: construction passes
    with pytest.raises(ValueError, match="encoder.weight"):
        mask.add_module(model, density=0.3)


def test_adam_moments_are_masked_after_every_step():
    model, opt, mask = build(optimizer="adam")
    train_steps(model, mask, opt, 2)
    for n, m in mask.masks.items():
        state = opt.state[mask.params[n]]
        assert torch.all(state["exp_avg"][~m] == 0) and torch.all(state["exp_avg_sq"][~m] == 0)
        assert torch.count_nonzero(state["exp_avg_sq"][m]) > 0


def test_load_state_dict_rejects_other_parameters():
    _, _, mask = build()
    other = Masking(torch.optim.SGD(TinyLSTMLM().parameters(), lr=1.0))
    other.add_module(TinyLSTMLM(), density=0.3, exclude=["decoder.*"])
    with pytest.raises(ValueError, match="mask names differ"):
        other.load_state_dict(mask.state_dict())


def test_grown_weights_start_at_zero_even_if_something_wrote_there():
    model, opt, mask = build(growth_count="exact")
    with torch.no_grad():  # an outside write into inactive positions (e.g. a bad checkpoint load)
        for n, p in mask.params.items():
            p[~mask.masks[n]] = 7.0
    before = {n: m.clone() for n, m in mask.masks.items()}
    mask.at_end_of_epoch()
    for n, new in mask.masks.items():
        grown_new = new & ~before[n]
        assert grown_new.any()
        assert torch.all(mask.params[n].detach()[grown_new] == 0)


class Highway(nn.Module):
    """A cell that declares a bare layout for its own weights (like an RHN micro-layer)."""

    def __init__(self):
        super().__init__()
        self.R = nn.Parameter(torch.randn(8, 4))
        self.bias = nn.Parameter(torch.zeros(8))

    def gate_layout(self):
        return 2


def test_bare_gate_layout_applies_to_the_modules_own_weights():
    model = nn.Sequential(Highway(), nn.Linear(4, 4))
    mask = Masking(torch.optim.SGD(model.parameters(), lr=1.0))
    mask.add_module(model, density=0.5)
    assert [b.name for b in mask.blocks["0.R"]] == ["H", "T"]
    assert len(mask.blocks["1.weight"]) == 1


@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_clip_through_masking_masks_gradients_except_for_gradient_growth(growth):
    """Masking.clip_grad_norm_: the fused clip (gradients masked in the rescale) with a mask-aware optimizer,
    torch's clip (dense gradients, which gradient growth reads at the update) otherwise; same norm either way."""
    from selfish.optim import SparseSGD

    torch.manual_seed(2)
    model, reference = TinyLSTMLM(), TinyLSTMLM()
    mask = Masking(SparseSGD(model.parameters(), lr=1.0), death_rate=0.5, growth_mode=growth)
    mask.add_module(model, density=0.3)
    reference.load_state_dict(model.state_dict())  # the same (masked) weights
    tokens, targets = torch.randint(0, VOCAB, (6, 3)), torch.randint(0, VOCAB, (18,))
    for net in (model, reference):
        F.cross_entropy(net(tokens), targets).backward()
    with torch.no_grad():
        for (name, p), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
            assert torch.equal(p.grad, ref.grad), name
    norm = mask.clip_grad_norm_(0.1)
    assert torch.equal(norm, nn.utils.clip_grad_norm_(reference.parameters(), 0.1))
    refs = dict(reference.named_parameters())
    for name, m in mask.masks.items():
        grad, ref_grad = mask.params[name].grad, refs[name].grad
        assert torch.equal(grad[m], ref_grad[m])
        if growth == "gradient":
            assert torch.equal(grad, ref_grad)  # dense, for the growth criterion
        else:
            assert torch.all(grad[~m] == 0) and torch.count_nonzero(ref_grad[~m]) > 0
    mask.step()
    assert_masked_zero(mask)
    mask.at_end_of_epoch()  # gradient growth finds its dense gradient
    assert_masked_zero(mask)


def test_clip_through_masking_with_a_plain_optimizer_is_torch_clip():
    model, opt, mask = build()
    tokens, targets = torch.randint(0, VOCAB, (6, 3)), torch.randint(0, VOCAB, (18,))
    F.cross_entropy(model(tokens), targets).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = mask.clip_grad_norm_(0.1)
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    torch.testing.assert_close(norm, expected)
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g * min(1.0, 0.1 / (float(expected) + 1e-6)))
    mask.step()
    assert_masked_zero(mask)
