"""Stacked LSTM language model (spec §6.1; SR ``models.Stacked_LSTM``, Zaremba et al.'s large LSTM).

Embedding -> Dropout(p) -> ``nn.LSTM(emsize, nhid, nlayers, dropout=p)`` -> Dropout(p) -> Linear(nhid, V).
Submodule names match the original (``encoder``, ``rnn``, ``decoder``) so its checkpoints load.

Sparsity: masks are multiplied in place into ``nn.LSTM``'s own weight Parameters, so the fused CPU /
cuDNN kernels (flat weights) keep working — no weight re-registration is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfish.models.base import Hidden, LMOutput, zero_regularizer
from selfish.models.recurrent import fused_lstm


class StackedLSTM(nn.Module):
    """Zaremba-style stacked LSTM LM (spec §6.1). No AR/TAR: :meth:`regularizer` returns 0.

    The layers run inside one fused ``nn.LSTM``, so ``raw_outputs`` / ``dropped_outputs`` hold only the
    last layer's output (before / after the output dropout).
    """

    def __init__(
        self,
        vocab_size: int,
        emsize: int,
        nhid: int,
        nlayers: int,
        dropout: float = 0.65,
        tied: bool = False,
    ) -> None:
        super().__init__()
        if tied and emsize != nhid:
            raise ValueError(f"tied weights need emsize == nhid, got emsize={emsize}, nhid={nhid}")
        self.vocab_size, self.emsize, self.nhid, self.nlayers = vocab_size, emsize, nhid, nlayers
        self.tied = tied
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnn = nn.LSTM(emsize, nhid, nlayers, dropout=dropout if nlayers > 1 else 0.0)
        self.decoder = nn.Linear(nhid, vocab_size)
        if tied:
            self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self, initrange: float = 0.1) -> None:
        """Encoder/decoder U(-0.1, 0.1), decoder bias 0; the LSTM keeps PyTorch's default init."""
        with torch.no_grad():
            self.encoder.weight.uniform_(-initrange, initrange)
            self.decoder.bias.zero_()
            if not self.tied:
                self.decoder.weight.uniform_(-initrange, initrange)

    def forward(self, tokens: Tensor, hidden: Hidden) -> LMOutput:
        """tokens ``[L, B]`` (long), hidden ``(h, c)`` each ``[nlayers, B, nhid]`` -> logits ``[L*B, V]``."""
        emb = self.drop(self.encoder(tokens))
        raw, hidden = fused_lstm(self.rnn, emb, hidden)
        dropped = self.drop(raw)
        logits = self.decoder(dropped.reshape(-1, self.nhid))
        return LMOutput(logits, hidden, [raw], [dropped])

    def init_hidden(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Zero ``(h, c)``, each ``[nlayers, batch_size, nhid]``, on the model's device/dtype."""
        w = self.rnn.weight_hh_l0
        shape = (self.nlayers, batch_size, self.nhid)
        return w.new_zeros(shape), w.new_zeros(shape)

    def gate_layout(self) -> dict[str, list[tuple[str, int]]]:
        """Row blocks of the LSTM weights in PyTorch order (i, f, g, o), ``nhid`` rows each."""
        gates = [(g, self.nhid) for g in ("i", "f", "g", "o")]
        return {f"rnn.weight_{kind}_l{k}": list(gates) for k in range(self.nlayers) for kind in ("ih", "hh")}

    def regularizer(self, output: LMOutput, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
        """The original LSTM recipe has no AR/TAR (spec §6.1): always 0."""
        return zero_regularizer(self)
