"""Headless chromium on a report: check that it loads (console messages, decoded plots) and take a
screenshot. Uses Debian's chromium with a fresh profile and no network services."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def chromium_command(page: Path, profile: Path, *extra: str, chromium: Path = CHROMIUM) -> list[str]:
    """The chromium command line for a local page; `extra` adds flags such as `--dump-dom`."""
    return [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
            "--virtual-time-budget=5000", *extra, Path(page).resolve().as_uri()]


def run_chromium(page: Path, *extra: str, timeout: float = 90.0, chromium: Path = CHROMIUM
                 ) -> subprocess.CompletedProcess:
    """Run chromium on `page` with a throw-away profile; stdout holds `--dump-dom` output."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(chromium_command(page, Path(profile), *extra, chromium=chromium),
                              capture_output=True, text=True, timeout=timeout, check=False)


def console_messages(stderr: str) -> list[str]:
    """Page console output (console.*, uncaught errors, blocked resources) from chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def loaded_state(dom: str) -> dict[str, str]:
    """The `data-*` attributes the report's load handler sets on <body> (`data-plots` = decoded/total)."""
    body = re.search(r"<body([^>]*)>", dom)
    return dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1))) if body else {}


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400) -> Path:
    """Save a `width` x `height` screenshot of the page's top as PNG."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    result = run_chromium(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    if result.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium screenshot failed: {result.stderr.strip()[-500:]}")
    return png
