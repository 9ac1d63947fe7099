"""Published full-scale numbers of Selfish-RNN (spec §7.1, SR README, ICML version) and family matching."""

from __future__ import annotations

import re
from typing import Any

# density = 1 - sparsity; RHN's 0.472 is the measured density of its sparse tensors (brief of issue 6).
PAPER_RESULTS: tuple[dict[str, Any], ...] = (
    {"label": "Selfish stacked LSTM", "model": "lstm", "corpus": "ptb", "density": 0.33,
     "val_ppl": 73.79, "test_ppl": 71.65},
    {"label": "Selfish RHN", "model": "rhn", "corpus": "ptb", "density": 0.472,
     "val_ppl": 62.10, "test_ppl": 60.35},
    {"label": "Selfish ON-LSTM, 1000 epochs", "model": "onlstm", "corpus": "ptb", "density": 0.45,
     "val_ppl": 58.17, "test_ppl": 56.31},
    {"label": "Selfish ON-LSTM, 1300 epochs", "model": "onlstm", "corpus": "ptb", "density": 0.45,
     "val_ppl": 57.67, "test_ppl": 55.82},
    {"label": "Selfish AWD-LSTM-MoS (no finetuning)", "model": "mos", "corpus": "wikitext2", "density": 0.45,
     "val_ppl": 65.96, "test_ppl": 63.05},
)

_MODEL_ALIASES = {"lstm": "lstm", "stackedlstm": "lstm", "rhn": "rhn", "onlstm": "onlstm",
                  "mos": "mos", "awdlstmmos": "mos", "lstmmos": "mos", "awdmos": "mos"}
_CORPUS_ALIASES = {"ptb": "ptb", "penn": "ptb", "penntreebank": "ptb", "wikitext2": "wikitext2",
                   "wt2": "wikitext2", "wikitext": "wikitext2"}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def canonical_family(model_type: str, corpus: str) -> tuple[str, str]:
    """(`lstm`|`rhn`|`onlstm`|`mos`|other, `ptb`|`wikitext2`|other) from spec names in any spelling."""
    model, data = _norm(model_type), _norm(corpus)
    return _MODEL_ALIASES.get(model, model), _CORPUS_ALIASES.get(data, data)


def paper_results_for(model_type: str, corpus: str) -> list[dict[str, Any]]:
    """The published rows for one experiment family (empty when the paper has none)."""
    key = canonical_family(model_type, corpus)
    return [row for row in PAPER_RESULTS if (row["model"], row["corpus"]) == key]
