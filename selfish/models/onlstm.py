"""ON-LSTM language model (spec §6.3; Shen et al. 2019, yikangshen/Ordered-Neurons; SR ``ONLSTM/*``).

Layers ``[emsize] + [nhid] * (nlayers - 1) + [emsize]`` (paper: 400/1150/1150/400), chunk size 10.
Each cell has ``ih`` = Sequential(Linear(in, 4h + 2h/chunk)) and ``hh`` = Linear(h, 4h + 2h/chunk). Gate
rows, in the order the original splits them: master input gate (h/chunk), master forget gate
(h/chunk), then output, cell, input, forget (h rows each); master gates use cumax = cumsum(softmax).

DropConnect on ``hh`` (``wdrop``) is applied functionally in forward, as the original
``LinearDropConnect`` does: in training the effective weight is ``W ⊙ m`` with ``m ~ Bernoulli(1 - wdrop)``
drawn once per forward call (no rescaling), at evaluation it is ``W · (1 - wdrop)``. The registered
Parameter ``rnn.cells.{k}.hh.weight`` is the raw weight — the one sparse masks multiply and ASGD
averages — so masked (zero) raw entries stay zero in every effective weight.

Parameter names match the original: ``encoder.weight`` (tied with ``decoder.weight``, tying forced),
``rnn.cells.{k}.ih.0.{weight,bias}``, ``rnn.cells.{k}.hh.{weight,bias}``, ``decoder.bias``.

``fast=True`` computes the same function as the plain per-step loop but folds the ``hh`` bias into the
hoisted input projection and forms the ``hh`` weight gradient in one matmul over all time steps
(:class:`selfish.models.recurrent.TimeBatchedLinear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfish.models.base import LMOutput
from selfish.models.recurrent import TimeBatchedLinear
from selfish.models.regularizers import LockedDropout, embedded_dropout, keep_mask


def cumsoftmax(x: Tensor, dim: int = -1) -> Tensor:
    """cumax: cumulative sum of the softmax along ``dim``."""
    return torch.cumsum(F.softmax(x, dim=dim), dim=dim)


def onlstm_update(gates: Tensor, cx: Tensor, n_chunk: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """One ON-LSTM state update. gates ``[B, 4h + 2·n_chunk]``, cx ``[B, h]`` -> (hy, cy), each ``[B, h]``."""
    batch = gates.size(0)
    cingate, cforgetgate = gates[:, : 2 * n_chunk].chunk(2, 1)
    outgate, cell, ingate, forgetgate = (
        gates[:, 2 * n_chunk :].view(batch, 4 * n_chunk, chunk_size).chunk(4, 1)
    )
    cingate = (1.0 - cumsoftmax(cingate))[:, :, None]
    cforgetgate = cumsoftmax(cforgetgate)[:, :, None]
    ingate, forgetgate = torch.sigmoid(ingate), torch.sigmoid(forgetgate)
    cell, outgate = torch.tanh(cell), torch.sigmoid(outgate)
    overlap = cforgetgate * cingate
    forgetgate = forgetgate * overlap + (cforgetgate - overlap)
    ingate = ingate * overlap + (cingate - overlap)
    cy = forgetgate * cx.view(batch, n_chunk, chunk_size) + ingate * cell
    hy = outgate * torch.tanh(cy)
    return hy.view(batch, -1), cy.view(batch, -1)


class ONLSTMCell(nn.Module):
    """One ON-LSTM layer: ``ih`` (Sequential(Linear)) and ``hh`` (Linear with functional DropConnect)."""

    def __init__(self, input_size: int, hidden_size: int, chunk_size: int, dropconnect: float = 0.0) -> None:
        super().__init__()
        if hidden_size % chunk_size:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of chunk_size {chunk_size}")
        self.hidden_size, self.chunk_size = hidden_size, chunk_size
        self.n_chunk = hidden_size // chunk_size
        self.dropconnect = dropconnect
        gate_rows = 4 * hidden_size + 2 * self.n_chunk
        self.ih = nn.Sequential(nn.Linear(input_size, gate_rows))
        self.hh = nn.Linear(hidden_size, gate_rows)

    def effective_hh_weight(self) -> Tensor:
        """DropConnect of the raw ``hh`` weight: ``W ⊙ Bernoulli(1 - p)`` in training, ``W (1 - p)`` in eval."""
        weight, p = self.hh.weight, self.dropconnect
        if not p:
            return weight
        if not self.training:
            return weight * (1 - p)
        return weight * keep_mask(weight, 1 - p)

    def gate_blocks(self) -> list[tuple[str, int]]:
        """Named row blocks of ``ih`` / ``hh`` weights, in the original's split order."""
        h, nc = self.hidden_size, self.n_chunk
        return [("master_i", nc), ("master_f", nc), ("o", h), ("g", h), ("i", h), ("f", h)]

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor], fast: bool = True):
        """inputs ``[L, B, in]``, state ``(h, c)`` each ``[B, h]`` -> (outputs ``[L, B, h]``, (h, c))."""
        hx, cx = state
        w_hh = self.effective_hh_weight()
        outputs = []
        if fast:
            projected = self.ih(inputs) + self.hh.bias
            recurrent = TimeBatchedLinear(w_hh)
            for x_proj in projected:
                hx, cx = onlstm_update(x_proj + recurrent.step(hx), cx, self.n_chunk, self.chunk_size)
                outputs.append(hx)
        else:
            projected = self.ih(inputs)
            for x_proj in projected:
                gates = x_proj + F.linear(hx, w_hh, self.hh.bias)
                hx, cx = onlstm_update(gates, cx, self.n_chunk, self.chunk_size)
                outputs.append(hx)
        return torch.stack(outputs), (hx, cx)


class ONLSTMStack(nn.Module):
    """The stack of ON-LSTM cells (named ``rnn`` in the model, holding ``cells``)."""

    def __init__(self, layer_sizes: list[int], chunk_size: int, dropconnect: float = 0.0) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            ONLSTMCell(layer_sizes[k], layer_sizes[k + 1], chunk_size, dropconnect)
            for k in range(len(layer_sizes) - 1)
        )


class ONLSTM(nn.Module):
    """ON-LSTM LM with AWD regularisation (spec §6.3). Hidden: list of ``(h, c)``, each ``[B, h_k]``.

    Dropouts: ``dropoute`` word-type (embedding rows), ``dropouti`` locked on embeddings, ``dropouth``
    locked between layers, ``dropout`` locked on the last layer's output; ``wdrop`` DropConnect on hh.

    AR/TAR (:meth:`regularizer`): TAR on the last layer's raw output. AR, by default
    (``ar_on_raw_output=True``), also on the last layer's *raw* output: that is what the original code
    does (its ``dropped_rnn_hs[-1]`` is the last layer's output before the output dropout, unlike
    AWD-LSTM). ``ar_on_raw_output=False`` uses the dropped output the decoder saw instead.
    """

    def __init__(
        self,
        vocab_size: int,
        emsize: int = 400,
        nhid: int = 1150,
        nlayers: int = 3,
        chunk_size: int = 10,
        dropout: float = 0.45,
        dropouth: float = 0.3,
        dropouti: float = 0.5,
        dropoute: float = 0.1,
        wdrop: float = 0.45,
        tied: bool = True,
        ar_on_raw_output: bool = True,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if not tied:
            raise ValueError("ON-LSTM always ties encoder and decoder weights (as the original code does)")
        self.vocab_size, self.emsize, self.nhid, self.nlayers = vocab_size, emsize, nhid, nlayers
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.ar_on_raw_output, self.fast = ar_on_raw_output, fast
        self.layer_sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize]
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnn = ONLSTMStack(self.layer_sizes, chunk_size, dropconnect=wdrop)
        self.decoder = nn.Linear(emsize, vocab_size)
        self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self, initrange: float = 0.1) -> None:
        """Encoder (= decoder) weight U(-0.1, 0.1), decoder bias 0; cells keep the Linear default init."""
        with torch.no_grad():
            self.encoder.weight.uniform_(-initrange, initrange)
            self.decoder.bias.zero_()

    def forward(self, tokens: Tensor, hidden: list[tuple[Tensor, Tensor]]) -> LMOutput:
        """tokens ``[L, B]``, hidden from :meth:`init_hidden` -> logits ``[L*B, V]``."""
        emb = embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0.0)
        layer_input = self.lockdrop(emb, self.dropouti)
        raw_outputs, dropped_outputs, new_hidden = [], [], []
        for k, cell in enumerate(self.rnn.cells):
            raw, state = cell(layer_input, hidden[k], fast=self.fast)
            new_hidden.append(state)
            raw_outputs.append(raw)
            last = k == len(self.rnn.cells) - 1
            layer_input = self.lockdrop(raw, self.dropout if last else self.dropouth)
            dropped_outputs.append(layer_input)
        logits = self.decoder(layer_input.reshape(-1, self.emsize))
        return LMOutput(logits, new_hidden, raw_outputs, dropped_outputs)

    def init_hidden(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Zero ``(h, c)`` per layer, each ``[batch_size, h_k]``, on the model's device/dtype."""
        w = self.encoder.weight
        return [(w.new_zeros(batch_size, h), w.new_zeros(batch_size, h)) for h in self.layer_sizes[1:]]

    def gate_layout(self) -> dict[str, list[tuple[str, int]]]:
        """Row blocks of every ``ih`` / ``hh`` weight: master_i, master_f, o, g, i, f."""
        layout = {}
        for k, cell in enumerate(self.rnn.cells):
            layout[f"rnn.cells.{k}.ih.0.weight"] = cell.gate_blocks()
            layout[f"rnn.cells.{k}.hh.weight"] = cell.gate_blocks()
        return layout

    def regularizer(self, output: LMOutput, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
        """``alpha · mean(a²) + beta · mean((r_t − r_{t−1})²)`` on the last layer (see class docstring)."""
        raw = output.raw_outputs[-1]
        activations = raw if self.ar_on_raw_output else output.dropped_outputs[-1]
        loss = raw.new_zeros(())
        if alpha:
            loss = loss + alpha * activations.pow(2).mean()
        if beta and raw.size(0) > 1:
            loss = loss + beta * (raw[1:] - raw[:-1]).pow(2).mean()
        return loss
