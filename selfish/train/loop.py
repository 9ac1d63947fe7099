"""The training loop of Selfish-RNN (spec §1, §5), readable top to bottom.

Per batch: forward, loss (+ AR/TAR), backward, clip (sparse: the clip's rescale also zeroes the pruned
weights' gradients), step (the mask-aware step keeps pruned weights at zero), log. Per epoch: validate
(with averaged weights in the ASGD phase), keep the best, fire the non-monotone trigger (SGD -> SNT-ASGD),
update the topology (prune and regrow), checkpoint. At the end: test with the best weights.

The loop takes objects and paths from its caller and emits plain-dict events (contracts.md) to sinks;
it never reads the environment and writes only the checkpoint paths it was given.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from selfish.data import batchify, bptt_schedule, get_batch
from selfish.models import repackage_hidden
from selfish.optim import SNTASGD, NonMonotoneTrigger, SparseSGD, build_adam, build_plateau_scheduler
from selfish.sparse import Masking, make_decay
from selfish.train import checkpoint as ckpt


class Sink(Protocol):
    """Where events go (run folder, W&B, terminal). Sinks never feed back into training."""

    def write(self, record: dict) -> None: ...

    def close(self, status: str) -> None: ...


class StopTraining(Exception):
    """Raised by an ``on_epoch`` callback to end training cleanly (e.g. an Optuna pruner)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs besides objects (mirrors the spec's data/optim/train sections)."""

    epochs: int
    lr: float
    clip: float = 0.25
    wdecay: float = 1.2e-6
    optimizer: str = "sgd"  # "sgd" (-> SNT-ASGD after the NT trigger) | "adam" (spec §6.5)
    momentum: float = 0.0
    asgd: bool = True  # False: plain SGD for the whole run (the "w/o SNT-ASGD" ablation)
    nonmono: int = 5
    when: tuple[int, ...] = ()  # epochs at which lr is divided by 10 (AWD)
    finetuning: tuple[int, ...] = ()  # epochs at which ASGD averages restart (ON-LSTM, spec §6.3)
    batch_size: int = 20
    eval_batch_size: int = 20
    test_batch_size: int = 20
    bptt: int = 35
    variable_bptt: bool = False
    max_seq_len_delta: int | None = None
    alpha: float = 0.0  # AR
    beta: float = 0.0  # TAR
    log_interval: int = 200
    max_steps_per_epoch: int | None = None
    checkpoint: bool = True
    precision: str = "fp32"  # "fp32" | "bf16": torch.autocast(bfloat16) around every forward pass
    seed: int = 1111


@dataclass(frozen=True)
class SparseSettings:
    """Mask configuration (spec §2-§4); ``None`` in place of this object trains dense."""

    density: float = 0.33
    init: str = "uniform"
    death: str = "magnitude"
    growth: str = "random"
    redistribution: str = "none"
    death_rate: float = 0.5
    death_rate_min: float = 0.005
    decay: str = "cosine"
    update_every: int | None = None  # None: once per epoch (the paper); N: every N steps
    growth_count: str = "bernoulli"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    update_in_switch_epoch: bool = False  # the original skips the update in the switch epoch (spec §10.7)


@dataclass
class LoopState:
    """Counters and records that a checkpoint must restore."""

    epoch: int = 0
    step: int = 0
    phase: str = "sgd"
    lr: float = 0.0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)  # per-epoch val loss/ppl


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


class Trainer:
    """Owns one run: model, data streams, masks, optimizer, trigger; emits events to ``sinks``."""

    def __init__(
        self,
        model: nn.Module,
        corpus: Any,
        settings: TrainSettings,
        sparse: SparseSettings | None,
        *,
        device: torch.device | str,
        sinks: Sequence[Sink] = (),
        checkpoint_dir: Path | None = None,
        spec: dict | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        start_info: dict | None = None,
        fault_hook: Callable[[str], None] | None = None,
    ):
        self.model = model.to(device)
        self.settings = settings
        self.sparse = sparse
        self.device = torch.device(device)
        self.sinks = list(sinks)
        self._broken_sinks: set[int] = set()
        self.checkpoint_dir = checkpoint_dir
        self.spec = spec or {}
        self.on_epoch = on_epoch
        self.start_info = start_info or {}
        # Fault injection (tests only): called with a point name ("step", "mask_update",
        # "checkpoint_written", "checkpoint_rotated"); the runner's hook may kill the process there.
        self.fault_hook = fault_hook
        s = settings
        self.train_data = batchify(corpus.train, s.batch_size).to(device)
        self.val_data = batchify(corpus.valid, s.eval_batch_size).to(device)
        self.test_data = batchify(corpus.test, s.test_batch_size).to(device)
        self.state = LoopState(lr=s.lr)
        self.trigger = NonMonotoneTrigger(s.nonmono)
        self.optimizer = self._first_optimizer()
        self.scheduler = build_plateau_scheduler(self.optimizer) if s.optimizer == "adam" else None
        self.masking = self._build_masking() if sparse is not None else None
        self.state.phase = "adam" if s.optimizer == "adam" else "sgd"

    # ----------------------------------------------------------------------------------- building
    def _first_optimizer(self) -> torch.optim.Optimizer:
        s = self.settings
        params = list(self.model.parameters())
        if s.optimizer == "adam":
            return build_adam(params, lr=s.lr, weight_decay=s.wdecay)
        if s.optimizer == "sgd":
            return SparseSGD(params, lr=s.lr, weight_decay=s.wdecay, momentum=s.momentum)
        raise ValueError(f"unknown optimizer {s.optimizer!r}; allowed: sgd, adam")

    def _steps_per_epoch(self) -> int:
        s = self.settings
        n = len(bptt_schedule(self.train_data.size(0), s.bptt, variable=False, generator=torch.Generator()))
        return min(n, s.max_steps_per_epoch) if s.max_steps_per_epoch else n

    def _build_masking(self) -> Masking:
        sp, s = self.sparse, self.settings
        assert sp is not None
        # T_max as the original: epochs * rows // bptt (spec §4), capped by the step budget when set.
        t_max = s.epochs * self.train_data.size(0) // s.bptt
        if s.max_steps_per_epoch:
            t_max = min(t_max, s.epochs * s.max_steps_per_epoch)
        decay = make_decay(sp.decay, sp.death_rate, max(1, t_max), sp.death_rate_min)
        masking = Masking(
            self.optimizer,
            death_rate=sp.death_rate,
            death_mode=sp.death,
            growth_mode=sp.growth,
            redistribution_mode=sp.redistribution,
            death_rate_decay=decay,
            seed=s.seed,
            update_every=sp.update_every,
            growth_count=sp.growth_count,
        )
        masking.add_module(
            self.model,
            density=sp.density,
            sparse_init=sp.init,
            include=list(sp.include) or None,
            exclude=list(sp.exclude) or None,
        )
        return masking

    # ------------------------------------------------------------------------------------ events
    def _emit(self, record: dict) -> None:
        record.setdefault("step", self.state.step)
        record.setdefault("epoch", self.state.epoch)
        for index, sink in enumerate(self.sinks):
            if index in self._broken_sinks:
                continue
            try:
                sink.write(record)
            except Exception as exc:  # a tracker must never stop training
                self._broken_sinks.add(index)
                warnings.warn(f"{type(sink).__name__} failed and is switched off: {exc}", stacklevel=2)

    def _close_sinks(self, status: str) -> None:
        for index, sink in enumerate(self.sinks):
            if index in self._broken_sinks:
                continue
            try:
                sink.close(status)
            except Exception as exc:
                warnings.warn(f"{type(sink).__name__} failed to close: {exc}", stacklevel=2)

    # -------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, source: torch.Tensor, batch_size: int) -> float:
        """Mean cross-entropy per token over a batchified stream (nats), fixed bptt windows."""
        self.model.eval()
        hidden = self.model.init_hidden(batch_size)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for i in range(0, source.size(0) - 1, self.settings.bptt):
            inputs, targets = get_batch(source, i, self.settings.bptt)
            with self._autocast():
                out = self.model(inputs, hidden)
                total += F.cross_entropy(out.logits, targets, reduction="sum").double()
            tokens += targets.numel()
            hidden = repackage_hidden(out.hidden)
        return (total / max(tokens, 1)).item()

    def _autocast(self) -> torch.autocast:
        """Mixed precision for a forward pass: bfloat16 autocast when ``precision`` is "bf16", else off."""
        enabled = self.settings.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _averaged(self):
        """Context: averaged weights in the ASGD phase (spec §5.1), raw weights otherwise."""
        if isinstance(self.optimizer, SNTASGD):
            return self.optimizer.averaged()
        return _nullcontext()

    # ---------------------------------------------------------------------------------- training
    def _epoch_schedule(self, epoch: int) -> list[tuple[int, int]]:
        s = self.settings
        generator = torch.Generator().manual_seed(s.seed * 100_003 + epoch)
        schedule = bptt_schedule(
            self.train_data.size(0),
            s.bptt,
            variable=s.variable_bptt,
            generator=generator,
            max_seq_len_delta=s.max_seq_len_delta,
        )
        return schedule[: s.max_steps_per_epoch] if s.max_steps_per_epoch else schedule

    def _clip_gradients(self, params: list[nn.Parameter]) -> None:
        """Clip to total norm ``clip`` (sparse: the clip's rescale applies the masks too, ``Masking``)."""
        if self.masking is not None:
            self.masking.clip_grad_norm_(self.settings.clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, self.settings.clip)

    def _optimizer_step(self) -> None:
        if self.masking is not None:
            self.masking.step()
        else:
            self.optimizer.step()

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training stream. Returns (mean train loss, tokens per second)."""
        s = self.settings
        self.model.train()
        schedule = self._epoch_schedule(epoch)
        hidden = self.model.init_hidden(s.batch_size)
        params = [p for p in self.model.parameters() if p.requires_grad]
        epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        window_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        window_tokens, epoch_tokens, window_batches = 0, 0, 0
        start = window_start = time.perf_counter()
        for batch, (i, seq_len) in enumerate(schedule, start=1):
            inputs, targets = get_batch(self.train_data, i, seq_len)
            scale = seq_len / s.bptt if s.variable_bptt else 1.0  # AWD scales by the drawn length
            for group in self.optimizer.param_groups:
                group["lr"] = self.state.lr * scale
            hidden = repackage_hidden(hidden)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                out = self.model(inputs, hidden)
                raw_loss = F.cross_entropy(out.logits, targets)
                loss = raw_loss
                if s.alpha or s.beta:
                    loss = loss + self.model.regularizer(out, s.alpha, s.beta)
            hidden = out.hidden
            loss.backward()
            if s.clip:
                self._clip_gradients(params)
            self._optimizer_step()
            self.state.step += 1
            if self.fault_hook is not None:
                self.fault_hook("step")
            detached = raw_loss.detach().double()
            epoch_loss += detached * inputs.size(0)
            window_loss += detached
            window_tokens += targets.numel()
            epoch_tokens += targets.numel()
            window_batches += 1
            if batch % s.log_interval == 0 or batch == len(schedule):
                mean = (window_loss / window_batches).item()
                if not math.isfinite(mean):
                    raise Diverged(f"training loss became {mean} at epoch {epoch}, step {self.state.step}")
                now = time.perf_counter()
                self._emit(
                    {
                        "type": "step",
                        "loss": mean,
                        "ppl": _ppl(mean),
                        "lr": self.state.lr,
                        "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                        "death_rate": self.masking.death_rate if self.masking else 0.0,
                        "phase": self.state.phase,
                        "batch": batch,
                        "batches": len(schedule),
                    }
                )
                window_loss.zero_()
                window_tokens, window_batches, window_start = 0, 0, now
        for group in self.optimizer.param_groups:
            group["lr"] = self.state.lr
        rows = sum(seq_len for _, seq_len in schedule)
        mean_loss = (epoch_loss / max(rows, 1)).item()
        if not math.isfinite(mean_loss):
            raise Diverged(f"training loss became {mean_loss} at epoch {epoch}")
        return mean_loss, epoch_tokens / max(time.perf_counter() - start, 1e-9)

    def _switch_to_asgd(self) -> None:
        """NT trigger fired: SGD -> SNT-ASGD with the same lr and weight decay (spec §5.2)."""
        self.optimizer = SNTASGD(
            list(self.model.parameters()), lr=self.state.lr, weight_decay=self.settings.wdecay
        )
        if self.masking is not None:
            self.masking.set_optimizer(self.optimizer)
        self.state.phase = "asgd"

    def _update_topology(self, switched: bool) -> dict | None:
        if self.masking is None or self.sparse is None or self.sparse.update_every is not None:
            return None
        if switched and not self.sparse.update_in_switch_epoch:
            return None
        stats = self.masking.at_end_of_epoch()
        if self.fault_hook is not None:
            self.fault_hook("mask_update")
        return stats.to_dict() if stats is not None else None

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch, validate, trigger, update masks; returns the epoch record."""
        s, st = self.settings, self.state
        st.epoch = epoch
        t0 = time.perf_counter()
        train_loss, tokens_per_s = self.train_epoch(epoch)
        with self._averaged():
            val_loss = self.evaluate(self.val_data, s.eval_batch_size)
            improved = val_loss < st.best_val_loss
            if improved:
                st.best_val_loss, st.best_epoch = val_loss, epoch
                self._save_best(val_loss)
        switched = False
        if st.phase == "sgd" and s.asgd and self.trigger.should_switch(val_loss):
            self._switch_to_asgd()
            switched = True
        elif st.phase == "asgd" and epoch in s.finetuning:
            assert isinstance(self.optimizer, SNTASGD)
            self.optimizer.restart()
        if self.scheduler is not None:
            self.scheduler.step(val_loss)
            st.lr = self.optimizer.param_groups[0]["lr"]
        mask_stats = self._update_topology(switched)
        if epoch in s.when:
            st.lr /= 10.0
            for group in self.optimizer.param_groups:
                group["lr"] = st.lr
        st.history.append({"epoch": epoch, "val_loss": val_loss})
        record = {
            "type": "epoch",
            "epoch": epoch,
            "step": st.step,
            "train_loss": train_loss,
            "train_ppl": _ppl(train_loss),
            "val_loss": val_loss,
            "val_ppl": _ppl(val_loss),
            "best_val_ppl": _ppl(st.best_val_loss),
            "lr": st.lr,
            "phase": st.phase,
            "switched": switched,
            "death_rate": self.masking.death_rate if self.masking else 0.0,
            "density": self.masking.density() if self.masking else 1.0,
            "exploration_rate": self.masking.exploration_rate() if self.masking else 1.0,
            "epoch_time_s": time.perf_counter() - t0,
            "tokens_per_s": tokens_per_s,
            "mask": mask_stats,
        }
        return record

    # ------------------------------------------------------------------------------ checkpoints
    def _save_best(self, val_loss: float) -> None:
        if self.checkpoint_dir is None or not self.settings.checkpoint:
            return
        best = {
            "format": "selfish-best-v1",
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "epoch": self.state.epoch,
            "val_loss": val_loss,
            "spec": self.spec,
        }
        ckpt.save_atomic(best, self.checkpoint_dir / "best.pt")

    def state_dict(self) -> dict:
        """Everything a bit-identical resume needs (plain containers and tensors only)."""
        return {
            "format": ckpt.FORMAT,
            "spec": self.spec,
            "model": self.model.state_dict(),
            "masking": self.masking.state_dict() if self.masking else None,
            "optimizer": {"kind": type(self.optimizer).__name__, "state": self.optimizer.state_dict()},
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "trigger": self.trigger.state_dict(),
            "loop": asdict(self.state),
            "rng": ckpt.rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        loop = state["loop"]
        self.model.load_state_dict(state["model"])
        if loop["phase"] == "asgd":
            self.optimizer = SNTASGD(
                list(self.model.parameters()), lr=loop["lr"], weight_decay=self.settings.wdecay
            )
        self.optimizer.load_state_dict(state["optimizer"]["state"])
        if self.masking is not None:
            self.masking.load_state_dict(state["masking"])
            self.masking.set_optimizer(self.optimizer)
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler = build_plateau_scheduler(self.optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
        self.trigger.load_state_dict(state["trigger"])
        self.state = LoopState(**{**loop, "history": list(loop["history"])})
        ckpt.set_rng_state(state["rng"])

    def _save_last(self) -> None:
        if self.checkpoint_dir is None or not self.settings.checkpoint:
            return
        ckpt.save_rotating(self.state_dict(), self.checkpoint_dir / "last.pt", fault_hook=self.fault_hook)

    # ------------------------------------------------------------------------------------- run
    def run(self, resume: bool = False) -> dict:
        """Train to the end (or until stopped), test with the best weights; returns the result."""
        s = self.settings
        if resume:
            self._resume()
        self._emit(
            {
                "type": "start",
                "resumed": resume,
                "steps_per_epoch": self._steps_per_epoch(),
                **self.start_info,
            }
        )
        status, reason = "completed", ""
        try:
            for epoch in range(self.state.epoch + 1, s.epochs + 1):
                record = self.run_epoch(epoch)
                # Events first, then the checkpoint: a kill in between replays this epoch on resume and the
                # run folder drops the records past the checkpoint; the other order could lose this record.
                self._emit(record)
                self._save_last()
                if self.on_epoch is not None:
                    self.on_epoch(record)
        except StopTraining as stop:
            status, reason = "stopped", stop.reason
        except Diverged as exc:
            status, reason = "diverged", str(exc)
        result = {"status": status, "reason": reason, "best_epoch": self.state.best_epoch}
        if status == "completed":  # a stopped (pruned) or diverged run skips the test pass
            result.update(self._final_test())
        self._emit({"type": "end", "status": status, "reason": reason})
        self._close_sinks(status)
        return result

    def _resume(self) -> None:
        """Restore the latest good checkpoint of ``checkpoint_dir`` (``last.pt``, else ``last.prev.pt``).

        A damaged ``last.pt`` is renamed ``last.pt.damaged`` (with a warning) so the next checkpoint does not
        rotate it over the good ``last.prev.pt``. With no checkpoint at all (stopped before the end of the
        first epoch) the run starts over from the beginning: the seeded build gives the same numbers.
        Raises ``CheckpointError`` when checkpoints exist but none loads.
        """
        if self.checkpoint_dir is None:
            raise ckpt.CheckpointError("resume needs a checkpoint folder")
        latest = self.checkpoint_dir / "last.pt"
        for stale in self.checkpoint_dir.glob(".*.pt.*.tmp"):  # temp files of a write that was killed
            stale.unlink(missing_ok=True)
        if not latest.exists() and not ckpt.previous_path(latest).exists():
            warnings.warn(f"{self.checkpoint_dir}: no checkpoint yet (stopped during the first epoch); "
                          "starting from the beginning", stacklevel=3)
            return
        state, used, problems = ckpt.load_latest(latest)
        for problem in problems:
            warnings.warn(f"{problem}; resuming from {used.name} instead", stacklevel=3)
        if used != latest and latest.exists():
            latest.replace(latest.with_name(latest.name + ".damaged"))
        self.load_state_dict(state)

    def _final_test(self) -> dict:
        """Score validation and test with the best weights (spec §1).

        The best weights are the saved ``best.pt`` (already averaged when saved in the ASGD phase); a run
        without checkpoints uses the current (averaged) weights instead.
        """
        s = self.settings
        best_path = self.checkpoint_dir / "best.pt" if self.checkpoint_dir else None
        if best_path is not None and best_path.exists():
            self.model.load_state_dict(ckpt.load(best_path)["model"])
            context = _nullcontext()
        else:
            context = self._averaged()
        with context:
            val_loss = self.evaluate(self.val_data, s.eval_batch_size)
            test_loss = self.evaluate(self.test_data, s.test_batch_size)
        record = {
            "type": "test",
            "test_loss": test_loss,
            "test_ppl": _ppl(test_loss),
            "val_loss": val_loss,
            "val_ppl": _ppl(val_loss),
            "best_epoch": self.state.best_epoch,
        }
        self._emit(record)
        return {k: v for k, v in record.items() if k != "type"}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
