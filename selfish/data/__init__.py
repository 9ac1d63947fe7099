"""Corpora (PTB, WikiText-2), vocabulary, batching and BPTT streams, download + sha256, token cache.

from selfish.data import load_corpus, batchify, get_batch, bptt_schedule
corpus = load_corpus("ptb", data_dir, cache_dir)          # Corpus: .dictionary, .train/.valid/.test
train = batchify(corpus.train, 20)                        # [rows, 20]
for i, seq_len in bptt_schedule(train.size(0), 35, variable=False):
    inputs, targets = get_batch(train, i, seq_len)        # [L, 20], [L*20]
"""

from __future__ import annotations

from .batching import batchify, bptt_schedule, get_batch, lr_scale
from .corpus import Corpus, Dictionary, build_corpus, load_corpus, tokenize_file
from .download import CORPORA
from .errors import DataError

__all__ = [
    "CORPORA",
    "Corpus",
    "DataError",
    "Dictionary",
    "batchify",
    "bptt_schedule",
    "build_corpus",
    "get_batch",
    "load_corpus",
    "lr_scale",
    "tokenize_file",
]
