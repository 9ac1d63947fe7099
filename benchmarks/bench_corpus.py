"""Corpus load time: first load (fresh cache folder: read, tokenise, write the token cache) and cached.

PTB and WikiText-2 from the real files (``data_dir``, given by the CLI from ``SELFISH_DATA`` or
/work/shared/data). Each round loads into a new cache folder (first) and then again from it (cached),
so first and cached alternate. The ratio is the cached load's speed-up over the first load. Tiny scale
writes a small synthetic PTB-layout folder instead of reading the real files.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import Scale, case, median, missing_piece, spread

NAME = "corpus"
TITLE = "Corpus load time, first vs cached"
FOLDERS = {"ptb": ("penn", ("train.txt", "valid.txt", "test.txt")),
           "wikitext2": ("wikitext-2", ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"))}


def write_tiny_ptb(root: Path, lines: int = 300) -> Path:
    """A PTB-layout folder of synthetic text under ``root`` (for the tiny scale)."""
    folder = root / "penn"
    folder.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(97)]
    for split, n in (("train.txt", lines), ("valid.txt", lines // 10), ("test.txt", lines // 10)):
        text = "\n".join(" ".join(words[(i * 7 + j) % 97] for j in range(12)) for i in range(n))
        (folder / split).write_text(text + "\n")
    return root


def _round(name: str, data_dir: Path, work: Path, index: int) -> tuple[float, float, int]:
    from selfish.data import load_corpus

    cache = work / f"cache{index}"
    start = time.perf_counter()
    first = load_corpus(name, data_dir, cache, download=False)
    mid = time.perf_counter()
    cached = load_corpus(name, data_dir, cache, download=False)
    end = time.perf_counter()
    if cached.train.numel() != first.train.numel():
        raise RuntimeError(f"{name}: cached corpus differs from the first load")
    shutil.rmtree(cache, ignore_errors=True)
    return mid - start, end - mid, int(first.train.numel())


def run(scale: Scale) -> dict:
    cases, notes, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="selfish-bench-corpus-") as tmp:
        work = Path(tmp)
        if scale.tiny or scale.data_dir is None:
            data_dir, names = write_tiny_ptb(work / "data"), ["ptb"]
            notes.append("synthetic PTB-layout text (tiny scale or no data folder given)")
        else:
            data_dir = scale.data_dir
            names = [n for n, (folder, files) in FOLDERS.items() if all((data_dir / folder / f).is_file() for f in files)]
            for n in FOLDERS:
                if n not in names:
                    skipped.append(f"{n}: files not found under {data_dir}")
        repeats = scale.repeats if scale.name != "full" else 3
        for name in names:
            try:
                rounds = [_round(name, data_dir, work, i) for i in range(repeats + 1)][1:]  # first: warm-up
            except Exception as exc:
                skipped.append(f"{name}: {missing_piece(exc)}")
                continue
            first = [r[0] for r in rounds]
            cached = [r[1] for r in rounds]
            f, c = median(first), median(cached)
            cases.append(case(
                f"{name} load", "seconds per load_corpus()", value=c, baseline=f, unit="s", ratio=f / c,
                ratio_means="first load time / cached load time (speed-up of the token cache)",
                train_tokens=rounds[0][2], first_times=spread(first), cached_times=spread(cached),
                data_dir=str(data_dir),
            ))
    notes.append("'measured' is the cached load, 'baseline' the first load into a fresh cache folder; the "
                 "first round is an untimed warm-up (page cache)")
    return {"cases": cases, "notes": notes, "skipped": skipped}
