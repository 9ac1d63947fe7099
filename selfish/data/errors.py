"""The one error type of `selfish.data`."""

from __future__ import annotations


class DataError(ValueError):
    """A corpus cannot be found, fetched, verified or batched; the message says what and where."""
