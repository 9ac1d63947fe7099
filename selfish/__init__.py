"""selfish-rnn: Selfish Sparse RNN Training (Liu et al., ICML 2021) as a library.

The original three-step recipe works as written::

    from selfish import Masking, CosineDecay
    decay = CosineDecay(death_rate, T_max)
    mask = Masking(optimizer, death_rate=..., death_mode=..., death_rate_decay=decay,
                   growth_mode=..., redistribution_mode=..., model=...)
    mask.add_module(model, sparse_init=..., density=...)
    # then call mask.step() in place of optimizer.step(), and mask.at_end_of_epoch() after each epoch
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Masking": "selfish.sparse",
    "CosineDecay": "selfish.sparse",
    "LinearDecay": "selfish.sparse",
    "ConstantDecay": "selfish.sparse",
}


def __getattr__(name: str):  # lazy so that `import selfish` stays cheap and free of cycles
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selfish' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
