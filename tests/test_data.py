"""selfish.data: tokenisation, real-corpus figures, token cache, downloads, batching, BPTT schedules."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

import selfish.data.corpus as corpus_module
from selfish.data import (
    Corpus,
    DataError,
    Dictionary,
    batchify,
    bptt_schedule,
    get_batch,
    load_corpus,
    lr_scale,
    tokenize_file,
)
from selfish.data.corpus import cache_path

# ------------------------------------------------------------------------------------------- helpers


def write_folder(root: Path, folder: str, names: dict[str, str], texts: dict[str, str]) -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (root / folder / names[split]).write_bytes(text.encode("utf-8"))
    return root


PTB_NAMES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
WT2_NAMES = {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"}
TINY = {"train": " a b c \n b d \n", "valid": " e a \n", "test": " c f"}  # test: no final newline


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def awd_reference_tokens(path: Path) -> list[str]:
    """The literal awd-lstm-lm `data.py` loop, to compare the fast tokeniser against."""
    tokens: list[str] = []
    with open(path, encoding="utf8") as f:
        for line in f:
            tokens += line.split() + ["<eos>"]
    return tokens


class CountingTokenizer:
    """Wraps `tokenize_file` so a test can see how many files were tokenised."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return tokenize_file(path)


@pytest.fixture
def counter(monkeypatch) -> CountingTokenizer:
    counting = CountingTokenizer()
    monkeypatch.setattr(corpus_module, "tokenize_file", counting)
    return counting


# ---------------------------------------------------------------------------------------- tokenising


def test_tiny_ptb_folder_exact_ids(tmp_path):
    data = write_folder(tmp_path / "data", "penn", PTB_NAMES, TINY)
    corpus = load_corpus("ptb", data, tmp_path / "cache")
    assert corpus.dictionary.idx2word == ["a", "b", "c", "<eos>", "d", "e", "f"]
    assert corpus.dictionary.word2idx == {w: i for i, w in enumerate(corpus.dictionary.idx2word)}
    assert corpus.train.tolist() == [0, 1, 2, 3, 1, 4, 3]
    assert corpus.valid.tolist() == [5, 0, 3]
    assert corpus.test.tolist() == [2, 6, 3]
    assert corpus.train.dtype == torch.int64 and corpus.train.device.type == "cpu"
    assert corpus.vocab_size == len(corpus.dictionary) == 7
    assert corpus.sha256["train"] == sha(TINY["train"].encode())


def test_wikitext_names_are_mapped_and_utf8_is_read(tmp_path):
    texts = {"train": " = Café = \n\n naïve @-@ word \n", "valid": "\n", "test": " word café \n"}
    data = write_folder(tmp_path / "data", "wikitext-2", WT2_NAMES, texts)
    corpus = load_corpus("wikitext2", data, None)
    assert corpus.dictionary.idx2word == ["=", "Café", "<eos>", "naïve", "@-@", "word", "café"]
    assert corpus.train.tolist() == [0, 1, 0, 2, 2, 3, 4, 5, 2]
    assert corpus.valid.tolist() == [2]
    assert corpus.test.tolist() == [5, 6, 2]


def test_fast_tokeniser_equals_the_awd_line_loop(tmp_path):
    text = " x  y\t z \r\nw\n\n\u00a0u\u2028v \x0cq\rlast line without newline"
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode("utf-8"))
    assert tokenize_file(path) == awd_reference_tokens(path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert tokenize_file(empty) == awd_reference_tokens(empty) == []


def test_dictionary_add_and_encode():
    d = Dictionary(["a", "b"])
    assert d.add_word("c") == 2 and d.add_word("a") == 0 and len(d) == 3
    assert d.encode(["c", "a", "c"]).tolist() == [2, 0, 2]
    with pytest.raises(DataError, match="'zz'"):
        d.encode(["zz"])


def test_unknown_corpus_name_lists_allowed_names(tmp_path):
    with pytest.raises(DataError, match=r"'ptb3'.*ptb, wikitext2"):
        load_corpus("ptb3", tmp_path, tmp_path)


def test_missing_files_without_download_name_files_and_layout(tmp_path):
    with pytest.raises(DataError) as info:
        load_corpus("wikitext2", tmp_path / "data", tmp_path / "cache", download=False)
    message = str(info.value)
    for name in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens", str(tmp_path / "data")):
        assert name in message
    assert "penn/{train,valid,test}.txt" in message and "switched off" in message


def test_slice_truncates_streams_and_keeps_dictionary(tmp_path):
    corpus = load_corpus("ptb", write_folder(tmp_path, "penn", PTB_NAMES, TINY), None)
    small = corpus.slice(train=4, test=1)
    assert isinstance(small, Corpus)
    assert small.train.tolist() == corpus.train[:4].tolist() and small.test.tolist() == [2]
    assert torch.equal(small.valid, corpus.valid)
    assert small.dictionary is corpus.dictionary and small.vocab_size == corpus.vocab_size
    assert corpus.train.numel() == 7  # the original is untouched
    assert corpus.slice(train=100).train.numel() == 7
    with pytest.raises(DataError):
        corpus.slice(valid=-1)


# ------------------------------------------------------------------------------------- real corpora


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="module")
def ptb(shared_data, real_cache):
    start = time.perf_counter()
    corpus = load_corpus("ptb", shared_data, real_cache, download=False)
    return corpus, time.perf_counter() - start


@pytest.fixture(scope="module")
def wt2(shared_data, real_cache):
    start = time.process_time()
    corpus = load_corpus("wikitext2", shared_data, real_cache, download=False)
    return corpus, time.process_time() - start


def test_real_ptb_counts(ptb):
    corpus, _ = ptb
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929_589, 73_760, 82_430)
    assert corpus.vocab_size == 10_000
    assert corpus.dictionary.idx2word[corpus.train[0]] == "aer"  # first word of ptb.train.txt
    assert int(corpus.train.max()) == 9_999  # train alone holds all types (README)
    assert not corpus.from_cache


def test_real_wikitext2_counts_and_speed(wt2):
    corpus, cpu_seconds = wt2
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (
        2_088_628,
        217_646,
        245_569,
    )
    assert corpus.vocab_size == 33_278
    assert corpus.dictionary.idx2word[corpus.train[0]] == "<eos>"  # the file starts with an empty line
    assert int(corpus.train.max()) == 33_277
    assert cpu_seconds < 2.0  # hashing + tokenising + caching, CPU time of this process


def test_real_files_match_the_published_hashes(ptb, wt2):
    from selfish.data import CORPORA

    assert ptb[0].sha256 == CORPORA["ptb"].sha256
    assert wt2[0].sha256 == CORPORA["wikitext2"].sha256


def test_real_cache_hit_is_equal_and_does_not_retokenise(shared_data, real_cache, wt2, counter):
    first, _ = wt2
    again = load_corpus("wikitext2", shared_data, real_cache, download=False)
    assert counter.calls == 0 and again.from_cache
    assert again.dictionary.idx2word == first.dictionary.idx2word
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(again, split), getattr(first, split))


# -------------------------------------------------------------------------------------- token cache


def test_cache_hit_skips_tokenising_and_is_weights_only_loadable(tmp_path, counter):
    data = write_folder(tmp_path / "data", "penn", PTB_NAMES, TINY)
    first = load_corpus("ptb", data, tmp_path / "cache")
    assert counter.calls == 3 and not first.from_cache
    second = load_corpus("ptb", data, tmp_path / "cache")
    assert counter.calls == 3 and second.from_cache
    assert second.dictionary.idx2word == first.dictionary.idx2word
    assert torch.equal(second.train, first.train) and torch.equal(second.test, first.test)
    files = list((tmp_path / "cache" / "tokens").iterdir())
    assert [f.name for f in files] == [cache_path(tmp_path / "cache", "ptb", first.sha256).name]
    payload = torch.load(files[0], weights_only=True)
    assert payload["idx2word"] == first.dictionary.idx2word
    assert torch.equal(payload["valid"], first.valid)


def test_corrupt_cache_is_rebuilt(tmp_path, counter):
    data = write_folder(tmp_path / "data", "penn", PTB_NAMES, TINY)
    first = load_corpus("ptb", data, tmp_path / "cache")
    cache_file = cache_path(tmp_path / "cache", "ptb", first.sha256)
    cache_file.write_bytes(cache_file.read_bytes()[:50])  # truncated
    rebuilt = load_corpus("ptb", data, tmp_path / "cache")
    assert counter.calls == 6 and not rebuilt.from_cache
    assert rebuilt.train.tolist() == first.train.tolist()
    assert load_corpus("ptb", data, tmp_path / "cache").from_cache  # the rebuilt cache is good again
    payload = torch.load(cache_file, weights_only=True)
    payload["train"] = torch.tensor([0, 99])  # well-formed file, ids outside the vocabulary
    torch.save(payload, cache_file)
    assert not load_corpus("ptb", data, tmp_path / "cache").from_cache
    assert counter.calls == 9


def test_changed_file_content_gets_a_new_cache_entry(tmp_path, counter):
    data = write_folder(tmp_path / "data", "penn", PTB_NAMES, TINY)
    load_corpus("ptb", data, tmp_path / "cache")
    (data / "penn" / "test.txt").write_text(" g \n")
    changed = load_corpus("ptb", data, tmp_path / "cache")
    assert counter.calls == 6 and not changed.from_cache
    assert changed.dictionary.idx2word[-1] == "g"
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2


# ---------------------------------------------------------------------------------------- downloads


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def http_dir(tmp_path):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 in a thread."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def ptb_sources(served: Path, base: str, texts: dict[str, str]) -> dict[str, str]:
    sources = {}
    for split, text in texts.items():
        (served / f"ptb.{split}.txt").write_bytes(text.encode())
        sources[f"penn/{split}.txt"] = f"{base}/ptb.{split}.txt"
        sources[f"penn/{split}.txt.sha256"] = sha(text.encode())
    return sources


def test_download_ptb_from_local_server(tmp_path, http_dir):
    served, base = http_dir
    cache = tmp_path / "cache"
    messages: list[str] = []
    sources = ptb_sources(served, base, TINY)
    corpus = load_corpus("ptb", tmp_path / "empty", cache, sources=sources, log=messages.append)
    assert corpus.train.tolist() == [0, 1, 2, 3, 1, 4, 3] and corpus.test.tolist() == [2, 6, 3]
    assert (cache / "penn" / "valid.txt").read_text() == TINY["valid"]
    assert sorted(p.name for p in (cache / "penn").iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    assert len(messages) == 3 and all(base in m for m in messages)
    for f in served.iterdir():  # the server is no longer needed: downloaded files are reused
        f.unlink()
    again = load_corpus("ptb", None, cache, sources=sources, download=False)
    assert again.from_cache and again.train.tolist() == corpus.train.tolist()


def test_download_bad_checksum_deletes_file(tmp_path, http_dir):
    served, base = http_dir
    sources = ptb_sources(served, base, TINY)
    sources["penn/valid.txt.sha256"] = "0" * 64
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"sha256 mismatch for penn/valid.txt.*deleted"):
        load_corpus("ptb", None, cache, sources=sources)
    left = sorted(p.name for p in (cache / "penn").iterdir())
    assert left == ["train.txt"]  # the verified one stays, the bad one and any temp file are gone


def test_download_wikitext_zip_from_local_server(tmp_path, http_dir):
    served, base = http_dir
    texts = {"train": " = T = \n\n a b \n", "valid": " b \n", "test": " c \n"}
    with zipfile.ZipFile(served / "wt2.zip", "w") as zf:
        for split, text in texts.items():
            zf.writestr(f"wikitext-2/{WT2_NAMES[split]}", text.encode())
    sources = {"wikitext-2-v1.zip": f"{base}/wt2.zip"}
    sources |= {f"wikitext-2/{WT2_NAMES[s]}.sha256": sha(t.encode()) for s, t in texts.items()}
    corpus = load_corpus("wikitext2", None, tmp_path / "cache", sources=sources)
    assert corpus.dictionary.idx2word == ["=", "T", "<eos>", "a", "b", "c"]
    assert corpus.test.tolist() == [5, 2]
    assert sorted(p.name for p in (tmp_path / "cache" / "wikitext-2").iterdir()) == sorted(WT2_NAMES.values())
    bad = sources | {"wikitext-2/wiki.test.tokens.sha256": "f" * 64}
    with pytest.raises(DataError, match="sha256 mismatch for wikitext-2/wiki.test.tokens"):
        load_corpus("wikitext2", None, tmp_path / "cache2", sources=bad)
    assert "wiki.test.tokens" not in {p.name for p in (tmp_path / "cache2" / "wikitext-2").iterdir()}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_gives_one_clear_error(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    refused = ptb_sources(served, f"http://127.0.0.1:{closed_port()}", TINY)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_corpus("ptb", tmp_path / "data", tmp_path / "cache", sources=refused, timeout=5)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "download failed" in message and "refused" in message.lower()
    assert str(tmp_path / "data" / "penn" / "train.txt") in message
    assert "wikitext-2/wiki.{train,valid,test}.tokens" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not any(p.name.startswith(".part") for p in (tmp_path / "cache" / "penn").iterdir())


def test_silent_server_times_out_instead_of_hanging(tmp_path):
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        served = tmp_path / "served"
        served.mkdir()
        sources = ptb_sources(served, f"http://127.0.0.1:{listener.getsockname()[1]}", TINY)
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"download failed.*timed out"):
            load_corpus("ptb", None, tmp_path / "cache", sources=sources, timeout=0.3)
        assert time.perf_counter() - start < 3


def test_http_404_is_reported_as_missing(tmp_path, http_dir):
    served, base = http_dir
    sources = ptb_sources(served, base, TINY)
    (served / "ptb.train.txt").unlink()
    with pytest.raises(DataError, match=r"download failed.*404"):
        load_corpus("ptb", None, tmp_path / "cache", sources=sources)


def test_unknown_source_key_is_rejected(tmp_path):
    with pytest.raises(DataError, match="unknown keys in sources.*penn/train.tokens"):
        load_corpus("ptb", None, tmp_path, sources={"penn/train.tokens": "http://127.0.0.1:9/x"})


# ----------------------------------------------------------------------------------------- batching


def test_batchify_columns_are_contiguous_pieces_and_remainder_is_dropped():
    batched = batchify(torch.arange(11), 3)
    assert batched.shape == (3, 3) and batched.is_contiguous()
    assert batched.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(DataError):
        batchify(torch.arange(5), 3)  # one row only: no input/target pair


def test_get_batch_inputs_and_flat_targets():
    source = batchify(torch.arange(40), 4)  # [10, 4]
    inputs, targets = get_batch(source, 2, 3)
    assert inputs.shape == (3, 4) and targets.shape == (12,)
    assert torch.equal(inputs, source[2:5]) and torch.equal(targets, source[3:6].reshape(-1))
    last_inputs, last_targets = get_batch(source, 7, 5)  # L = min(5, 10 - 1 - 7) = 2
    assert last_inputs.shape == (2, 4) and torch.equal(last_targets, source[8:10].reshape(-1))
    with pytest.raises(DataError):
        get_batch(source, 9, 5)


def test_fixed_schedule_walks_every_row_once():
    assert bptt_schedule(100, 35, variable=False) == [(0, 35), (35, 35), (70, 35)]
    assert bptt_schedule(71, 35, variable=False) == [(0, 35), (35, 35)]
    assert bptt_schedule(72, 35, variable=False) == [(0, 35), (35, 35), (70, 35)]
    source = batchify(torch.arange(2 * 97), 2)
    targets = [get_batch(source, i, L)[1] for i, L in bptt_schedule(97, 10, variable=False)]
    assert torch.equal(torch.cat(targets), source[1:].reshape(-1))  # each target row exactly once
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    bptt_schedule(97, 10, variable=False, generator=generator)
    assert torch.equal(generator.get_state(), state)  # fixed mode draws nothing


def test_variable_schedule_is_deterministic_per_seed():
    def run(seed):
        return bptt_schedule(5_000, 70, variable=True, generator=torch.Generator().manual_seed(seed))

    assert run(1) == run(1)
    assert run(1) != run(2)
    with pytest.raises(DataError):
        bptt_schedule(100, 70, variable=True)


def test_variable_schedule_follows_the_awd_rule():
    n_rows = 200_000
    schedule = bptt_schedule(
        n_rows, 70, variable=True, generator=torch.Generator().manual_seed(0), max_seq_len_delta=None
    )
    starts = [i for i, _ in schedule]
    lengths = torch.tensor([seq_len for _, seq_len in schedule], dtype=torch.float64)
    assert starts[0] == 0 and all(b - a == s for (a, s), b in zip(schedule[:-1], starts[1:], strict=True))
    assert starts[-1] < n_rows - 2 <= starts[-1] + schedule[-1][1]
    assert int(lengths.min()) >= 5
    short = lengths < 52.5  # halfway between the two bases, 3.5 sigma from each
    n = len(schedule)
    assert abs(short.double().mean().item() - 0.05) < 5 * (0.05 * 0.95 / n) ** 0.5
    # int() truncates N(70, 5) toward zero: mean 69.5, sd ~5.0; 5 standard errors of slack
    long = lengths[~short]
    assert abs(long.mean().item() - 69.5) < 5 * 5.0 / long.numel() ** 0.5
    assert 4.7 < long.std().item() < 5.3
    assert int(lengths.max()) > 80  # uncapped: long windows do happen


def test_variable_schedule_cap_and_min_len():
    capped = bptt_schedule(
        50_000, 70, variable=True, generator=torch.Generator().manual_seed(0), max_seq_len_delta=0, min_len=60
    )
    lengths = [s for _, s in capped]
    assert max(lengths) == 70 and min(lengths) == 60
    default = bptt_schedule(50_000, 70, variable=True, generator=torch.Generator().manual_seed(0))
    assert max(s for _, s in default) <= 110  # contract default max_seq_len_delta=40


def test_lr_scale():
    assert lr_scale(35, 70) == 0.5 and lr_scale(77, 70) == pytest.approx(1.1)
