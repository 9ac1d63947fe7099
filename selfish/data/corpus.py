"""Word-level corpora: tokenisation and vocabulary exactly as salesforce/awd-lstm-lm `data.py`, plus
a token cache.

Tokenisation: every line of a UTF-8 file becomes ``line.split() + ['<eos>']``; the dictionary gets
words in order of first appearance over train, then valid, then test, so ids are deterministic.
The token cache stores the id streams and the word list in ``cache_dir/tokens/<name>-<key>.pt``
(a plain dict of tensors and strings, loadable with ``torch.load(weights_only=True)``), where the key
hashes the corpus name, the sha256 of the three files and `CACHE_FORMAT`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import download as dl
from .errors import DataError

EOS = "<eos>"
CACHE_FORMAT = 1


class Dictionary:
    """Word <-> id maps (awd-lstm-lm `Dictionary`): ids are given in order of first `add_word`."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.idx2word: list[str] = []
        self.word2idx: dict[str, int] = {}
        for word in words:
            self.add_word(word)

    def add_word(self, word: str) -> int:
        """Id of `word`, adding it at the end if new."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return idx

    def encode(self, tokens: list[str]) -> torch.Tensor:
        """Ids of `tokens` as a LongTensor [len(tokens)]; unknown words raise `DataError`."""
        try:
            ids = np.fromiter(map(self.word2idx.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        except KeyError as err:
            raise DataError(f"word {err.args[0]!r} is not in the dictionary") from None
        return torch.from_numpy(ids)

    def __len__(self) -> int:
        return len(self.idx2word)

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} words)"


@dataclass
class Corpus:
    """A tokenised corpus: `dictionary` and three LongTensor id streams [n_tokens] on the CPU.

    `sha256` holds the hashes of the source files (empty for corpora built in memory), `from_cache`
    says whether the streams came from the token cache.
    """

    dictionary: Dictionary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    name: str = "custom"
    sha256: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def vocab_size(self) -> int:
        """Number of word types (the model's input and output size)."""
        return len(self.dictionary)

    def slice(self, train: int | None = None, valid: int | None = None, test: int | None = None) -> Corpus:
        """A corpus whose streams are the first N tokens of these (None keeps a stream whole).

        The dictionary is shared, so ids and `vocab_size` are unchanged; the tensors are views.
        """

        def head(stream: torch.Tensor, n: int | None, split: str) -> torch.Tensor:
            if n is None:
                return stream
            if n < 0:
                raise DataError(f"slice: {split}={n} must be >= 0")
            return stream[:n]

        return Corpus(
            dictionary=self.dictionary,
            train=head(self.train, train, "train"),
            valid=head(self.valid, valid, "valid"),
            test=head(self.test, test, "test"),
            name=self.name,
            sha256=dict(self.sha256),
            from_cache=self.from_cache,
        )

    def __repr__(self) -> str:
        return (
            f"Corpus({self.name!r}, vocab={self.vocab_size}, train={self.train.numel()}, "
            f"valid={self.valid.numel()}, test={self.test.numel()}, from_cache={self.from_cache})"
        )


def tokenize_file(path: Path) -> list[str]:
    """Tokens of a UTF-8 text file: for each line, ``line.split() + ['<eos>']`` (awd-lstm-lm `data.py`).

    Lines are what Python's text-mode file iteration yields (universal newlines), so a last line
    without a trailing newline still counts and an empty file gives no tokens.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text += "\n"
    # Marking each line end with a space-separated <eos> and splitting once is the same as the
    # per-line loop (split() never crosses the spaces around the marker) and ~10x faster.
    return text.replace("\n", f" {EOS} ").split()


def build_corpus(token_streams: Mapping[str, list[str]], name: str = "custom") -> Corpus:
    """Dictionary over train, then valid, then test (first appearance), and the three id streams."""
    words: dict[str, None] = {}
    for split in dl.SPLITS:
        words.update(dict.fromkeys(token_streams[split]))
    dictionary = Dictionary(words)
    streams = {split: dictionary.encode(token_streams[split]) for split in dl.SPLITS}
    return Corpus(dictionary=dictionary, name=name, **streams)


def tokenize_corpus(paths: Mapping[str, Path], name: str = "custom") -> Corpus:
    """Read and tokenise the three split files (`paths`: split -> file) into a `Corpus`."""
    return build_corpus({split: tokenize_file(paths[split]) for split in dl.SPLITS}, name=name)


# ----------------------------------------------------------------------------------------- token cache


def cache_path(cache_dir: Path, name: str, sha256: Mapping[str, str]) -> Path:
    """File of the token cache for corpus `name` with these file hashes (and `CACHE_FORMAT`)."""
    material = "|".join([f"v{CACHE_FORMAT}", name, *(sha256[s] for s in dl.SPLITS)])
    key = hashlib.sha256(material.encode()).hexdigest()[:24]
    return Path(cache_dir) / "tokens" / f"{name}-v{CACHE_FORMAT}-{key}.pt"


def save_token_cache(path: Path, corpus: Corpus) -> None:
    """Write the corpus (word list + id streams + file hashes) to `path` atomically."""
    payload = {
        "format": CACHE_FORMAT,
        "name": corpus.name,
        "sha256": dict(corpus.sha256),
        "idx2word": list(corpus.dictionary.idx2word),
        **{split: getattr(corpus, split).contiguous() for split in dl.SPLITS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_token_cache(path: Path, name: str, sha256: Mapping[str, str]) -> Corpus | None:
    """The cached corpus at `path`, or None if it is absent, unreadable or does not match."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any corruption (truncated zip, bad pickle, ...) means: rebuild
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        return None
    if payload.get("name") != name or payload.get("sha256") != dict(sha256):
        return None
    words = payload.get("idx2word")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return None
    if len(set(words)) != len(words):
        return None
    streams = {}
    for split in dl.SPLITS:
        ids = payload.get(split)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.int64:
            return None
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(words)):
            return None
        streams[split] = ids
    return Corpus(dictionary=Dictionary(words), name=name, sha256=dict(sha256), from_cache=True, **streams)


# ----------------------------------------------------------------------------------------- load_corpus


def _verified_cached_download(
    source: dl.CorpusSource, cache_dir: Path | None
) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """Files already downloaded into `cache_dir`: (paths, their sha256, splits still missing).

    A file there whose hash is not the expected one is deleted (it will be fetched again).
    """
    paths: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    missing: list[str] = []
    for split in dl.SPLITS:
        path = None if cache_dir is None else Path(cache_dir) / source.relpath(split)
        if path is not None and path.is_file():
            digest = dl.sha256_file(path)
            if digest == source.sha256[split]:
                paths[split], hashes[split] = path, digest
                continue
            path.unlink(missing_ok=True)
        missing.append(split)
    return paths, hashes, missing


def _locate(
    source: dl.CorpusSource,
    data_dir: Path | None,
    cache_dir: Path | None,
    *,
    download: bool,
    timeout: float,
    log: dl.Log | None,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Paths and sha256 of the three split files: from `data_dir`, else the cache, else downloaded."""
    found = dl.find_files(source, data_dir)
    if found is not None:
        return found, {split: dl.sha256_file(path) for split, path in found.items()}
    paths, hashes, missing = _verified_cached_download(source, cache_dir)
    if not missing:
        return paths, hashes
    folders = [data_dir, cache_dir]
    if not download:
        raise DataError(dl.missing_message(source, folders, "downloading is switched off"))
    if cache_dir is None:
        raise DataError(dl.missing_message(source, folders, "no cache folder to download into"))
    try:
        dl.fetch(source, Path(cache_dir), missing, timeout=timeout, log=log)
    except dl.NetworkError as err:
        raise DataError(dl.missing_message(source, folders, f"download failed ({err})")) from None
    except OSError as err:  # cannot create or write the cache folder
        raise DataError(dl.missing_message(source, folders, f"cannot write to {cache_dir} ({err})")) from None
    paths, hashes, missing = _verified_cached_download(source, cache_dir)
    if missing:  # only reachable if the files vanished right after being written
        raise DataError(dl.missing_message(source, folders, "downloaded files disappeared"))
    return paths, hashes


def load_corpus(
    name: str,
    data_dir: Path | None,
    cache_dir: Path | None,
    *,
    download: bool = True,
    sources: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    log: dl.Log | None = None,
) -> Corpus:
    """Load corpus `name` ("ptb" or "wikitext2") as a `Corpus` of LongTensor id streams.

    Files are taken from `data_dir/<folder>/` if all three are there (not hash-checked: any content
    is accepted, the hashes only key the cache); else from `cache_dir/<folder>/` (earlier downloads,
    hash-checked); else downloaded there from the canonical hosts (or `sources`, see
    `selfish.data.download`) with `timeout` seconds per network operation, and verified by sha256.
    Tokens are cached in `cache_dir/tokens/`; a missing or corrupt cache is (re)built.
    `log` receives one line per download. `cache_dir=None` disables downloads and the token cache.

    Raises `DataError` for an unknown name, missing files that cannot be downloaded (one message
    saying which files and where to put them), or a checksum mismatch (the bad file is deleted).
    """
    source = dl.with_overrides(dl.corpus_source(name), sources)
    paths, hashes = _locate(source, data_dir, cache_dir, download=download, timeout=timeout, log=log)
    cache_file = None if cache_dir is None else cache_path(Path(cache_dir), name, hashes)
    if cache_file is not None:
        cached = load_token_cache(cache_file, name, hashes)
        if cached is not None:
            return cached
    corpus = tokenize_corpus(paths, name=name)
    corpus.sha256 = dict(hashes)
    if cache_file is not None:
        try:
            save_token_cache(cache_file, corpus)
        except OSError as err:  # a read-only cache folder only costs speed
            warnings.warn(f"could not write token cache {cache_file}: {err}", stacklevel=2)
    return corpus
