"""AWD-LSTM-MoS language model (spec §6.4; Yang et al. 2018, zihangdai/mos ``model.py``).

Embedding (emsize 300) -> 3 single-layer LSTMs (1150, 1150, nhidlast 650) with DropConnect on each
``hh`` weight -> mixture of ``n_experts`` (15) softmaxes: ``prior = softmax(prior(o))``,
``latent = tanh(latent(o))`` split into ``n_experts`` vectors of size emsize, each decoded by the tied
decoder; ``p(w) = sum_k prior_k softmax(decoder(latent_k))_w``.

``forward`` returns log-probabilities ``[L*B, V]`` as ``logits``: ``F.cross_entropy`` on them equals the
NLL (their logsumexp is 0). They are computed stably as ``logsumexp_k(log prior_k + log_softmax_k)``
(:class:`_MixtureLogProb`) instead of the original ``log(p + 1e-8)``, which adds ``log(1 + V·1e-8)`` (3e-4 nats at V = 33278) to
cross-entropy and floors log-probabilities at -18.4; otherwise the two agree.

DropConnect (``wdrop``, AWD ``WeightDrop`` semantics: ``F.dropout`` of the raw weight, i.e. scaled by
1/(1-p) in training, the raw weight at evaluation) is applied functionally: each layer calls the fused
``torch.lstm`` kernel with the explicit weight list ``[W_ih, dropout(W_hh_raw), b_ih, b_hh]``. No
monkey-patching: the registered Parameter is the raw weight, which masks multiply and ASGD averages.

Names follow the original (whose ``WeightDrop`` re-registers the hh weight as ``..._raw``), so its
checkpoints load: ``encoder.weight`` (= ``decoder.weight``), ``rnns.{k}.module.weight_ih_l0``,
``rnns.{k}.module.weight_hh_l0_raw``, ``rnns.{k}.module.bias_{ih,hh}_l0``, ``prior.weight``,
``latent.0.{weight,bias}``, ``decoder.bias``.

Which tensors are sparse: the original MoS code is dense, and Selfish-RNN released no MoS code
(spec §6.4, UNCONFIRMED). Applying Selfish-RNN's rule (every parameter whose name does not contain
"bias", spec §2.1) gives: ``encoder.weight`` (tied decoder), every ``weight_ih_l0`` and
``weight_hh_l0_raw``, ``prior.weight`` and ``latent.0.weight``; biases stay dense. That is the default
here (the mask code decides; this module only names the tensors).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfish.models.base import LMOutput, ar_tar
from selfish.models.recurrent import fused_lstm
from selfish.models.regularizers import LockedDropout, embedded_dropout, keep_mask


class _MixtureLogProb(torch.autograd.Function):
    """``log sum_k exp(log_prior_k + log_softmax(z_k))`` with a hand-written backward (fewer passes).

    forward(z ``[N, K, V]`` expert logits, log_prior ``[N, K]``) -> log-probabilities ``[N, V]``; equal
    to ``logsumexp(log_softmax(z, -1) + log_prior[..., None], dim=1)`` (max-shifted, so stable). The
    backward uses the responsibilities ``r = exp(y - out)`` (``y`` = the summands):
    ``dy = g r``, ``d log_prior = sum_w dy``, ``dz = dy - softmax(z) · d log_prior``. Fewer passes over
    the ``[N, K, V]`` tensor than autograd through ``log_softmax`` + ``logsumexp`` (measured 1.15x to 1.4x
    on the mixture alone at N = 525, K = 2, V = 33278, one thread, load 6).
    """

    @staticmethod
    def forward(ctx, z: Tensor, log_prior: Tensor) -> Tensor:
        log_softmax = F.log_softmax(z, dim=2)  # [N, K, V]; kept for softmax(z) = exp(log_softmax)
        shifted = log_softmax + log_prior.unsqueeze(2)  # y = log prior_k + log softmax(z_k)
        top = shifted.amax(dim=1)  # [N, V]
        shifted.sub_(top.unsqueeze(1)).exp_()  # exp(y - top)
        out = shifted.sum(dim=1).log_().add_(top)
        ctx.save_for_backward(log_softmax, shifted, out, top)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_softmax, shifted, out, top = ctx.saved_tensors
        # r = exp(y - out) = exp(y - top) · exp(top - out)
        dy = shifted * (top - out).exp_().mul_(grad).unsqueeze(1)
        d_log_prior = dy.sum(dim=2)  # [N, K]
        dz = log_softmax.exp().mul_(d_log_prior.unsqueeze(2))
        return dy.sub_(dz), d_log_prior


class _LSTMWeights(nn.Module):
    """Holds one LSTM layer's parameters under the original names (``weight_hh_l0_raw`` etc.)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0_raw = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's default init
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class WeightDropLSTM(nn.Module):
    """A one-layer LSTM with DropConnect on the hh weight, run by the fused ``torch.lstm`` kernel."""

    def __init__(self, input_size: int, hidden_size: int, wdrop: float = 0.0) -> None:
        super().__init__()
        self.hidden_size, self.wdrop = hidden_size, wdrop
        self.module = _LSTMWeights(input_size, hidden_size)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """inputs ``[L, B, in]``, state ``(h, c)`` each ``[1, B, H]`` -> (outputs ``[L, B, H]``, (h, c))."""
        m = self.module
        w_hh = m.weight_hh_l0_raw
        if self.wdrop and self.training:  # F.dropout semantics (AWD WeightDrop), with a faster mask draw
            w_hh = w_hh * keep_mask(w_hh, 1 - self.wdrop) / (1 - self.wdrop)
        weights = [m.weight_ih_l0, w_hh, m.bias_ih_l0, m.bias_hh_l0]
        outputs, h, c = fused_lstm(
            lambda x, s: torch.lstm(x, s, weights, True, 1, 0.0, self.training, False, False), inputs, state)
        return outputs, (h, c)


class MoS(nn.Module):
    """AWD-LSTM-MoS (spec §6.4). Hidden: list of ``(h, c)`` per layer, each ``[1, B, H_k]``.

    Dropouts: ``dropoute`` word-type, ``dropouti`` locked on embeddings, ``dropouth`` locked between
    LSTM layers, ``dropout`` locked on the last LSTM output, ``dropoutl`` locked on the latent, ``wdrop``
    DropConnect on hh weights. AR (on the dropped last output) and TAR (raw last output) via
    :meth:`regularizer`.
    """

    def __init__(
        self,
        vocab_size: int,
        emsize: int = 300,
        nhid: int = 1150,
        nhidlast: int = 650,
        nlayers: int = 3,
        n_experts: int = 15,
        dropout: float = 0.4,
        dropouth: float = 0.2,
        dropouti: float = 0.55,
        dropoute: float = 0.1,
        dropoutl: float = 0.29,
        wdrop: float = 0.5,
        tied: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.emsize, self.nhid, self.nhidlast = vocab_size, emsize, nhid, nhidlast
        self.nlayers, self.n_experts = nlayers, n_experts
        self.dropout, self.dropouth, self.dropouti = dropout, dropouth, dropouti
        self.dropoute, self.dropoutl = dropoute, dropoutl
        self.hidden_sizes = [nhid] * (nlayers - 1) + [nhidlast]
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnns = nn.ModuleList(
            WeightDropLSTM(emsize if k == 0 else nhid, size, wdrop)
            for k, size in enumerate(self.hidden_sizes)
        )
        self.prior = nn.Linear(nhidlast, n_experts, bias=False)
        self.latent = nn.Sequential(nn.Linear(nhidlast, n_experts * emsize), nn.Tanh())
        self.decoder = nn.Linear(emsize, vocab_size)
        if tied:
            self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self, initrange: float = 0.1) -> None:
        """Encoder/decoder U(-0.1, 0.1), decoder bias 0; the rest keeps PyTorch defaults."""
        with torch.no_grad():
            self.encoder.weight.uniform_(-initrange, initrange)
            self.decoder.weight.uniform_(-initrange, initrange)
            self.decoder.bias.zero_()

    def forward(self, tokens: Tensor, hidden: list[tuple[Tensor, Tensor]]) -> LMOutput:
        """tokens ``[L, B]`` -> log-probabilities ``[L*B, V]`` (see module docstring)."""
        emb = embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0.0)
        layer_input = self.lockdrop(emb, self.dropouti)
        raw_outputs, dropped_outputs, new_hidden = [], [], []
        for k, rnn in enumerate(self.rnns):
            raw, state = rnn(layer_input, hidden[k])
            new_hidden.append(state)
            raw_outputs.append(raw)
            last = k == self.nlayers - 1
            layer_input = self.lockdrop(raw, self.dropout if last else self.dropouth)
            dropped_outputs.append(layer_input)
        output = layer_input  # [L, B, nhidlast]
        latent = self.lockdrop(self.latent(output), self.dropoutl)  # [L, B, K * emsize]
        expert_logits = self.decoder(latent.reshape(-1, self.emsize)).view(
            -1, self.n_experts, self.vocab_size
        )
        log_prior = F.log_softmax(self.prior(output).reshape(-1, self.n_experts), dim=-1)
        log_prob = _MixtureLogProb.apply(expert_logits, log_prior)
        return LMOutput(log_prob, new_hidden, raw_outputs, dropped_outputs)

    def init_hidden(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Zero ``(h, c)`` per layer, each ``[1, batch_size, H_k]``, on the model's device/dtype."""
        w = self.encoder.weight
        return [(w.new_zeros(1, batch_size, h), w.new_zeros(1, batch_size, h)) for h in self.hidden_sizes]

    def gate_layout(self) -> dict[str, list[tuple[str, int]]]:
        """LSTM weights: i, f, g, o blocks (PyTorch order); MoS heads have no gates."""
        layout = {}
        for k, size in enumerate(self.hidden_sizes):
            gates = [(g, size) for g in ("i", "f", "g", "o")]
            layout[f"rnns.{k}.module.weight_ih_l0"] = list(gates)
            layout[f"rnns.{k}.module.weight_hh_l0_raw"] = list(gates)
        return layout

    def regularizer(self, output: LMOutput, alpha: float = 0.0, beta: float = 0.0) -> Tensor:
        """AWD AR on the last dropped LSTM output plus TAR on the last raw output."""
        return ar_tar(output, alpha, beta)
