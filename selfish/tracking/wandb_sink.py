"""The Weights & Biases sink: one W&B run per training run (issue 3, section 5).

- The mode is decided by the caller (`online`, `offline`, `disabled`; the runner turns `auto` into
  online/offline by looking for a login). It is set in `wandb.Settings` before `wandb.init`, so an
  offline run never touches the network. `auto` reaching this class means offline.
- Step metrics (`train/*`) use the optimizer step (`step`) as their x axis; epoch metrics (`val/*`,
  `epoch/*`, `density/*`, `removed/*`, `regrown/*`, `mask/*`) use `epoch`; `val/ppl` is summarised as min.
- `wandb.json` in the run folder keeps the W&B run id and the last logged step and epoch, so a resumed
  training run continues the same W&B run (`resume="allow"`) and never logs a step or epoch twice.
- Any W&B exception (init, log, finish) gives one warning, then the sink turns itself off: training never
  stops because of W&B. `init_timeout` bounds the time an unreachable server can cost.
"""

from __future__ import annotations

import json
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selfish.tracking.run_folder import to_jsonable, write_json_atomic

__all__ = ["WandbSink", "WANDB_STATE"]

WANDB_STATE = "wandb.json"
_EPOCH_PREFIXES = ("val/*", "epoch/*", "density/*", "removed/*", "regrown/*", "mask/*")


def _setting(settings: Any, key: str, default: Any = None) -> Any:
    if isinstance(settings, Mapping):
        return settings.get(key, default)
    return getattr(settings, key, default)



def parse_init_timeout(value: str | None) -> float:
    """Seconds from a ``WANDB_INIT_TIMEOUT`` value given by the caller (None or empty: 30).

    Raises ValueError naming the variable when the value is not a positive number.
    """
    if not value:
        return 30.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"WANDB_INIT_TIMEOUT={value}: must be a positive number of seconds")
    return seconds

class WandbSink:
    """Log events to one W&B run. `config` is the resolved spec dict; `settings` a `WandbSpec` or mapping
    with `mode`, `project`, `entity`, `group`, `tags`; `mode` (if given) overrides `settings.mode`."""

    def __init__(self, config: Mapping[str, Any], settings: Any, run_dir: Path, *, name: str | None = None,
                 mode: str | None = None, init_timeout: float = 30.0, job_type: str = "train"):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.run_dir / WANDB_STATE
        self.mode = mode or _setting(settings, "mode", "offline")
        if self.mode == "auto":
            self.mode = "offline"
        self.project = _setting(settings, "project", "selfish-rnn")
        self.group = _setting(settings, "group")
        self.state = self._read_state()
        self.last_step = int(self.state.get("last_step", -1))
        self.last_epoch = int(self.state.get("last_epoch", 0))
        self.run = None
        self.url: str | None = None
        self._warned = False
        if self.mode == "disabled":
            return
        try:
            self._init(config, settings, name, init_timeout, job_type)
        except Exception as exc:  # noqa: BLE001 - W&B trouble must never stop training
            self._fail("init", exc)

    # -- public -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.run is not None

    def info(self) -> dict[str, Any]:
        """What the run folder's summary records about this W&B run."""
        return {"id": self.state.get("id"), "mode": self.mode if self.active or self.mode == "disabled" else "failed",
                "url": self.url, "project": self.project, "group": self.group}

    def write(self, record: dict) -> None:
        if self.run is None:
            return
        try:
            self._write(record)
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def close(self, status: str) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.summary["status"] = status
            run.finish(exit_code=0 if status in ("completed", "stopped") else 1)
        except Exception as exc:  # noqa: BLE001
            self._fail("finish", exc)

    # -- internals --------------------------------------------------------------------------------
    def _init(self, config: Mapping[str, Any], settings: Any, name: str | None, init_timeout: float,
              job_type: str) -> None:
        import wandb

        run_id = self.state.get("id") or secrets.token_hex(4)  # W&B ids: [a-z0-9]
        # W&B prints its own lines (login source, retries, git warnings) from the process-wide setup, before
        # the run's settings apply; silence them there so a W&B problem shows as this sink's one warning.
        wandb.setup(settings=wandb.Settings(silent=True))
        wb_settings = wandb.Settings(mode=self.mode, init_timeout=init_timeout, console="off",
                                     x_disable_stats=True, silent=True)
        self.run = wandb.init(
            project=self.project, entity=_setting(settings, "entity"), group=self.group,
            tags=list(_setting(settings, "tags", []) or []), name=name, job_type=job_type,
            config=to_jsonable(dict(config)), dir=str(self.run_dir), id=run_id, resume="allow",
            settings=wb_settings, reinit="create_new",
        )
        run = self.run
        run.define_metric("step")
        run.define_metric("train/*", step_metric="step")
        run.define_metric("epoch")
        for prefix in _EPOCH_PREFIXES:
            run.define_metric(prefix, step_metric="epoch")
        run.define_metric("val/ppl", step_metric="epoch", summary="min")
        if self.mode == "online":
            self.url = run.url
        self.state.update(id=run.id, mode=self.mode, project=self.project, group=self.group, url=self.url)
        self._save_state()

    def _fail(self, where: str, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            detail = " ".join(str(exc).split())  # one line, whatever W&B put in its message
            warnings.warn(f"W&B {where} failed ({type(exc).__name__}: {detail}); W&B logging is off for this run, "
                          "training continues (the run folder has every metric)", RuntimeWarning, stacklevel=3)
        run, self.run = self.run, None
        if run is not None and where != "finish":
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
        try:  # end this process's W&B session now: a dead service would print a traceback at exit
            import wandb

            wandb.teardown()
        except Exception:  # noqa: BLE001 - it is already broken; the next run starts a new session
            pass

    def _read_state(self) -> dict:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        self.state.update(last_step=self.last_step, last_epoch=self.last_epoch)
        write_json_atomic(self.state_path, self.state)

    def _write(self, record: dict) -> None:
        kind = record.get("type")
        step = int(record.get("step", 0))
        if kind == "start":
            for key in ("params_dense", "params_nonzero", "density", "steps_per_epoch", "device"):
                if record.get(key) is not None:
                    self.run.summary[key] = record[key]
            for key, value in (record.get("flops") or {}).items():
                self.run.summary[f"flops/{key}"] = value
        elif kind == "step":
            if step <= self.last_step:
                return  # already logged before the crash this run resumed from
            data = {"step": step}
            for key in ("loss", "ppl", "lr", "tokens_per_s", "death_rate"):
                if record.get(key) is not None:
                    data[f"train/{key}"] = record[key]
            data["train/asgd"] = int(record.get("phase") == "asgd")
            self.run.log(data)
            self.last_step = step
            self._save_state()
        elif kind == "epoch":
            epoch = int(record.get("epoch", 0))
            if epoch <= self.last_epoch:
                return
            self.run.log(self._epoch_metrics(record))
            self.last_epoch = epoch
            self.last_step = max(self.last_step, step)
            self._save_state()
        elif kind == "test":
            for key in ("test_loss", "test_ppl", "best_epoch"):
                if record.get(key) is not None:
                    self.run.summary[key.replace("_", "/", 1) if key.startswith("test") else key] = record[key]
        elif kind == "end":
            self.run.summary["status"] = record.get("status")
            if record.get("reason"):
                self.run.summary["reason"] = record["reason"]

    def _epoch_metrics(self, record: dict) -> dict[str, Any]:
        """Flatten one epoch record: ppl, lr, death rate, phase, densities, removed/regrown, a gate table."""
        import wandb

        epoch = int(record["epoch"])
        data: dict[str, Any] = {"epoch": epoch}
        for key, name in (("val_ppl", "val/ppl"), ("val_loss", "val/loss"), ("best_val_ppl", "val/best_ppl"),
                          ("train_ppl", "epoch/train_ppl"), ("train_loss", "epoch/train_loss"),
                          ("lr", "epoch/lr"), ("death_rate", "epoch/death_rate"), ("density", "density/total"),
                          ("exploration_rate", "mask/exploration_rate"), ("epoch_time_s", "epoch/time_s"),
                          ("tokens_per_s", "epoch/tokens_per_s")):
            if record.get(key) is not None:
                data[name] = record[key]
        data["epoch/phase"] = record.get("phase")
        data["epoch/asgd"] = int(record.get("phase") == "asgd")
        data["epoch/switched"] = int(bool(record.get("switched")))
        mask = record.get("mask")
        if mask:
            total = mask.get("total", {})
            for key in ("removed", "regrown", "regrown_just_removed", "turnover", "exploration_rate"):
                if total.get(key) is not None:
                    data[f"mask/{key}"] = total[key]
            for tensor, stats in (mask.get("tensors") or {}).items():
                data[f"density/{tensor}"] = stats.get("density")
                data[f"removed/{tensor}"] = stats.get("removed")
                data[f"regrown/{tensor}"] = stats.get("regrown")
            rows = []
            for tensor, gates in (mask.get("gates") or {}).items():
                for gate, stats in gates.items():
                    data[f"density/{tensor}/{gate}"] = stats.get("density")
                    data[f"removed/{tensor}/{gate}"] = stats.get("removed")
                    data[f"regrown/{tensor}/{gate}"] = stats.get("regrown")
                    rows.append([epoch, tensor, gate, stats.get("density"), stats.get("nonzero_after"),
                                             stats.get("numel"), stats.get("removed"), stats.get("regrown")])
            if rows:  # this epoch's gates only (a cumulative table would grow quadratically)
                data["mask/gate_density"] = wandb.Table(
                    columns=["epoch", "tensor", "gate", "density", "nonzero", "numel", "removed", "regrown"],
                    data=rows)
        return {key: value for key, value in data.items() if value is not None}
