"""The Makefile's experiment targets name specs that exist and validate; the README's make targets exist."""

from __future__ import annotations

import re
from pathlib import Path

from selfish.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = (REPO / "Makefile").read_text()


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z0-9][a-z0-9-]*):", MAKEFILE, flags=re.MULTILINE))


def test_every_spec_a_target_trains_exists_and_validates():
    paths = set(re.findall(r"experiments/[\w/]+\.yaml", MAKEFILE))
    loops = re.findall(r"for s in ([\w ]+); do[\s\\]*\$\(SELFISH\) train (experiments/[\w/]+?)\$\$s\.yaml", MAKEFILE)
    assert len(loops) == 2  # baselines-ptb and cpu-all
    for names, stem in loops:
        paths |= {f"{stem}{name}.yaml" for name in names.split()}
    assert len(paths) > 20
    for path in sorted(paths):
        assert (REPO / path).is_file(), path
        load_spec(REPO / path)


def test_readme_make_targets_exist():
    mentioned = set(re.findall(r"`make ([a-z0-9-]+)", (REPO / "README.md").read_text()))
    assert {"cpu-lstm-snfs", "cpu-lstm-static", "cpu-lstm-small-dense", "bench", "test"} <= _targets()
    assert mentioned - _targets() == set()
