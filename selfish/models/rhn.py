"""Recurrent Highway Network language model (spec §6.2; SR ``models.RHN/RecurrentHighway/HighwayBlock``).

One recurrent highway layer of ``recurrence_depth`` micro-layers (Zilly et al. 2017). Per time step,
micro-layer 1 computes ``[H; T] = W x_t + R_1 (s ⊙ d_h)``, micro-layers 2..D ``[H; T] = R_l (s ⊙ d_h)``;
``h = tanh(H)``, ``t = σ(T)``, ``c = 1 - t`` when ``couple`` (else ``c = σ(W_C x + R_C (s ⊙ d_h))``) and
``s ← h·t + s·c``. The layer output at each step is ``s`` after the last micro-layer.

Parameter names follow the original so its checkpoints load: ``embedding.weight`` (tied to
``fc1.weight``), ``rnns.{k}.highways.0.W.{weight,bias}``, ``rnns.{k}.highways.{l}.R.{weight,bias}`` and,
uncoupled, ``W_C`` / ``R_C``. Unlike the original, ``R`` maps nhid -> 2·nhid (the original sizes it from
the layer input, which only works when emsize == nhid, the paper's setting).

Two numerically equivalent implementations of the recurrence (``fast`` flag):
- plain: a Python loop over time steps and highway blocks; autograd records every op (the reference).
- fast: ``W x`` for all time steps in one matmul, then one ``addmm`` per micro-layer and step inside a
  custom ``autograd.Function`` whose hand-written backward batches the weight gradients of each ``R_l``
  over all time steps into a single ``[G·H, L·B] @ [L·B, H]`` matmul (instead of L rank-B updates and
  L accumulations of a full-size gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfish.models.base import LMOutput, zero_regularizer
from selfish.models.recurrent import autocast_matmul_dtype
from selfish.models.regularizers import LockedDropout, embedded_dropout, keep_mask


class HighwayBlock(nn.Module):
    """One micro-layer of a recurrent highway layer (the plain reference implementation)."""

    def __init__(self, in_features: int, hidden: int, first: bool, couple: bool) -> None:
        super().__init__()
        self.first, self.couple, self.hidden = first, couple, hidden
        if first:
            self.W = nn.Linear(in_features, 2 * hidden)
            if not couple:
                self.W_C = nn.Linear(in_features, hidden)
        self.R = nn.Linear(hidden, 2 * hidden)
        if not couple:
            self.R_C = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, s: Tensor, mask: Tensor | None) -> Tensor:
        """x ``[B, in]``, s ``[B, H]``, mask ``[B, H]`` (or None) -> new s ``[B, H]``."""
        sm = s if mask is None else s * mask
        r_h, r_t = torch.split(self.R(sm), self.hidden, 1)
        if self.first:
            w_h, w_t = torch.split(self.W(x), self.hidden, 1)
            r_h, r_t = w_h + r_h, w_t + r_t
        h, t = torch.tanh(r_h), torch.sigmoid(r_t)
        if self.couple:
            c = 1 - t
        else:
            pre_c = self.R_C(sm)
            if self.first:
                pre_c = self.W_C(x) + pre_c
            c = torch.sigmoid(pre_c)
        return h * t + s * c


class _HighwayRecurrence(torch.autograd.Function):
    """The RHN time loop with a hand-written backward (see module docstring).

    forward(wx ``[L, B, G·H]``, s0 ``[B, H]``, mask ``[B, H]`` or None, couple, matmul_dtype, w_1, b_1, ...)
    -> (outputs ``[L, B, H]``, s_L ``[B, H]``); ``w_l`` ``[G·H, H]``, ``b_l`` ``[G·H]``, G = 2 (H, T)
    when coupled, 3 (H, T, C) otherwise; ``wx`` already holds ``W x_t + b_W`` for every step.
    ``matmul_dtype`` (None, or the autocast dtype, e.g. bfloat16) is the dtype of the matmuls only.
    Micro-step ``k = t·D + l`` reads state ``states[k]`` and writes ``states[k + 1]``; the coupled
    update is written ``s + t (h - s)`` (= ``h t + s (1 - t)``) to save elementwise ops.
    """

    @staticmethod
    def forward(
        ctx, wx: Tensor, s0: Tensor, mask: Tensor | None, couple: bool, matmul_dtype: torch.dtype | None,
        *params: Tensor,
    ):
        weights, biases = params[0::2], params[1::2]
        # Under autocast the matmuls run in `matmul_dtype` on copies of the weights cast once per call
        # (a per-step cast would re-read every weight at every micro-step); the state stays in s0's dtype.
        mm_weights = weights if matmul_dtype is None else [w.to(matmul_dtype) for w in weights]
        wx_dtype, wx = wx.dtype, wx.to(s0.dtype)
        steps, batch, _ = wx.shape
        hidden, depth = s0.shape[1], len(weights)
        states = wx.new_empty((steps * depth + 1, batch, hidden))
        states[0] = s0
        hs = wx.new_empty((steps * depth, batch, hidden))
        ts = torch.empty_like(hs)
        cs = None if couple else torch.empty_like(hs)
        first_input = wx + biases[0]  # [L, B, G·H]: W x_t + b_W + b_R1, hoisted
        for step in range(steps):
            for layer in range(depth):
                k = step * depth + layer
                s = states[k]
                sm = s if mask is None else s * mask
                bias = first_input[step] if layer == 0 else biases[layer]
                pre = _linear(bias, sm, mm_weights[layer], matmul_dtype)
                h = torch.tanh(pre[:, :hidden], out=hs[k])
                t = torch.sigmoid(pre[:, hidden : 2 * hidden], out=ts[k])
                if couple:
                    torch.addcmul(s, t, h - s, out=states[k + 1])
                else:
                    c = torch.sigmoid(pre[:, 2 * hidden :], out=cs[k])
                    torch.addcmul(h * t, s, c, out=states[k + 1])
        ctx.couple, ctx.matmul_dtype, ctx.wx_dtype = couple, matmul_dtype, wx_dtype
        ctx.save_for_backward(mask, states, hs, ts, cs, *mm_weights)
        outputs = states[depth::depth].clone()
        return outputs, states[-1].clone()

    @staticmethod
    def backward(ctx, grad_outputs: Tensor | None, grad_s: Tensor | None):
        mask, states, hs, ts, cs, *weights = ctx.saved_tensors
        couple, matmul_dtype = ctx.couple, ctx.matmul_dtype
        depth = len(weights)
        micro_steps, batch, hidden = hs.shape
        steps = micro_steps // depth
        gates = weights[0].shape[0]
        dpre_all = hs.new_empty((micro_steps, batch, gates))
        ds = torch.zeros_like(states[0]) if grad_s is None else grad_s.clone()
        for step in reversed(range(steps)):
            if grad_outputs is not None:
                ds = ds + grad_outputs[step]
            for layer in reversed(range(depth)):
                k = step * depth + layer
                h, t, s, dpre = hs[k], ts[k], states[k], dpre_all[k]
                dh_gate = ds * t  # dL/dh · (other factor of the H-gate path)
                torch.addcmul(dh_gate, dh_gate, h * h, value=-1, out=dpre[:, :hidden])  # · (1 - h²)
                if couple:
                    # s' = s + t (h - s): ds'/dt = h - s, ds'/ds = 1 - t
                    dt = ds * (h - s) * t
                    torch.addcmul(dt, dt, t, value=-1, out=dpre[:, hidden : 2 * hidden])  # · (1 - t)
                    ds_prev = ds - dh_gate
                else:
                    c = cs[k]
                    dt = ds * h * t
                    torch.addcmul(dt, dt, t, value=-1, out=dpre[:, hidden : 2 * hidden])
                    dc = ds * s * c
                    torch.addcmul(dc, dc, c, value=-1, out=dpre[:, 2 * hidden :])
                    ds_prev = ds * c
                through_r = _matmul(dpre, weights[layer], matmul_dtype)
                ds = ds_prev + through_r if mask is None else torch.addcmul(ds_prev, through_r, mask)
        param_grads: list[Tensor | None] = []
        dpre_steps = dpre_all.view(steps, depth, batch, gates)
        for layer in range(depth):
            inputs = states[layer:micro_steps:depth]  # [L, B, H], the state micro-layer `layer` read
            sm = inputs if mask is None else inputs * mask
            dpre = dpre_steps[:, layer].reshape(-1, gates)
            param_grads.append(_matmul(dpre.t(), sm.reshape(-1, hidden), matmul_dtype))
            param_grads.append(dpre.sum(0))
        # b_R1 was folded into the hoisted first-layer input: its gradient is the sum of dpre over steps.
        return (dpre_steps[:, 0].to(ctx.wx_dtype), ds, None, None, None, *param_grads)


def _linear(bias: Tensor, x: Tensor, weight: Tensor, matmul_dtype: torch.dtype | None) -> Tensor:
    """``bias + x @ weight.T`` in x's dtype; the product in ``matmul_dtype`` when given (weight already cast)."""
    if matmul_dtype is None:
        return torch.addmm(bias, x, weight.t())
    return torch.mm(x.to(matmul_dtype), weight.t()).to(x.dtype).add_(bias)


def _matmul(a: Tensor, b: Tensor, matmul_dtype: torch.dtype | None) -> Tensor:
    """``a @ b`` in a's dtype; computed in ``matmul_dtype`` when given."""
    if matmul_dtype is None:
        return a @ b
    return (a.to(matmul_dtype) @ b.to(matmul_dtype)).to(a.dtype)


class RecurrentHighway(nn.Module):
    """A recurrent highway layer of ``recurrence_depth`` :class:`HighwayBlock` s (spec §6.2)."""

    def __init__(self, in_features: int, hidden: int, recurrence_depth: int, couple: bool) -> None:
        super().__init__()
        self.hidden, self.couple = hidden, couple
        self.highways = nn.ModuleList(
            HighwayBlock(in_features, hidden, first=(depth == 0), couple=couple)
            for depth in range(recurrence_depth)
        )

    def forward(
        self, inputs: Tensor, s: Tensor, mask: Tensor | None, fast: bool = True
    ) -> tuple[Tensor, Tensor]:
        """inputs ``[L, B, in]``, s ``[B, H]``, mask ``[B, H]`` or None -> (outputs ``[L, B, H]``, s)."""
        if fast:
            return self._forward_fast(inputs, s, mask)
        outputs = []
        for x in inputs:
            for block in self.highways:
                s = block(x, s, mask)
            outputs.append(s)
        return torch.stack(outputs), s

    def _forward_fast(self, inputs: Tensor, s: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        first = self.highways[0]
        if self.couple:
            wx = first.W(inputs)
            params = [t for b in self.highways for t in (b.R.weight, b.R.bias)]
        else:
            wx = torch.cat([first.W(inputs), first.W_C(inputs)], dim=2)
            params = []
            for b in self.highways:
                params += [torch.cat([b.R.weight, b.R_C.weight]), torch.cat([b.R.bias, b.R_C.bias])]
        device_type = inputs.device.type
        matmul_dtype = autocast_matmul_dtype(device_type)
        with torch.autocast(device_type, enabled=False):  # the Function casts for itself
            return _HighwayRecurrence.apply(wx, s, mask, self.couple, matmul_dtype, *params)


class RHN(nn.Module):
    """RHN language model (spec §6.2): embedding -> RHN layer(s) -> Linear(nhid, V), optionally tied.

    Dropouts: ``dropoute`` word-type dropout on the embedding table; ``dropouti`` locked dropout on the
    embeddings; ``dropouth`` one ``[B, H]`` mask on the state fed to ``R`` shared by all steps and
    micro-layers of a forward call; ``dropout`` locked dropout on each layer's outputs.
    Hidden state: ``[nlayers, B, nhid]``. No AR/TAR.
    """

    def __init__(
        self,
        vocab_size: int,
        emsize: int = 830,
        nhid: int = 830,
        recurrence_depth: int = 10,
        nlayers: int = 1,
        dropout: float = 0.65,
        dropouth: float = 0.25,
        dropouti: float = 0.65,
        dropoute: float = 0.2,
        tied: bool = True,
        couple: bool = True,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if tied and emsize != nhid:
            raise ValueError(f"tied weights need emsize == nhid, got emsize={emsize}, nhid={nhid}")
        self.nhid, self.nlayers, self.couple, self.tied, self.fast = nhid, nlayers, couple, tied, fast
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.embedding = nn.Embedding(vocab_size, emsize)
        self.rnns = nn.ModuleList(
            RecurrentHighway(emsize if k == 0 else nhid, nhid, recurrence_depth, couple)
            for k in range(nlayers)
        )
        self.fc1 = nn.Linear(nhid, vocab_size)
        self.lockdrop = LockedDropout()
        if tied:
            self.fc1.weight = self.embedding.weight
        self.init_weights()

    def init_weights(self, initrange: float = 0.1) -> None:
        """Embedding/decoder U(-0.1, 0.1), decoder bias 0; highway Linears keep the default init."""
        with torch.no_grad():
            self.embedding.weight.uniform_(-initrange, initrange)
            self.fc1.weight.uniform_(-initrange, initrange)
            self.fc1.bias.zero_()

    def _state_mask(self, s: Tensor) -> Tensor | None:
        """The ``dropouth`` mask ``[B, H]`` (scaled), or None when not training."""
        if not self.training or not self.dropouth:
            return None
        return keep_mask(s, 1 - self.dropouth) / (1 - self.dropouth)

    def forward(self, tokens: Tensor, hidden: Tensor) -> LMOutput:
        """tokens ``[L, B]``, hidden ``[nlayers, B, nhid]`` -> logits ``[L*B, V]``."""
        emb = embedded_dropout(self.embedding, tokens, self.dropoute if self.training else 0.0)
        out = self.lockdrop(emb, self.dropouti)
        raw_outputs, dropped_outputs, new_hidden = [], [], []
        for k, rnn in enumerate(self.rnns):
            raw, s = rnn(out, hidden[k], self._state_mask(hidden[k]), fast=self.fast)
            out = self.lockdrop(raw, self.dropout)
            raw_outputs.append(raw)
            dropped_outputs.append(out)
            new_hidden.append(s)
        logits = self.fc1(out.reshape(-1, out.size(2)))
        return LMOutput(logits, torch.stack(new_hidden), raw_outputs, dropped_outputs)

    def init_hidden(self, batch_size: int) -> Tensor:
        """Zero state ``[nlayers, batch_size, nhid]`` on the model's device/dtype."""
        return self.fc1.weight.new_zeros((self.nlayers, batch_size, self.nhid))

    def gate_layout(self) -> dict[str, list[tuple[str, int]]]:
        """``W`` and ``R`` rows are [H; T] blocks; uncoupled ``W_C`` / ``R_C`` are one "C" block."""
        ht = [("H", self.nhid), ("T", self.nhid)]
        layout: dict[str, list[tuple[str, int]]] = {}
        for name, _ in self.named_parameters():
            if not name.endswith(".weight") or not name.startswith("rnns."):
                continue
            module = name.rsplit(".", 2)[-2]
            layout[name] = list(ht) if module in ("W", "R") else [("C", self.nhid)]
        return layout

    def regularizer(self, output: LMOutput, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
        """The original RHN recipe has no AR/TAR: always 0."""
        return zero_regularizer(self)
