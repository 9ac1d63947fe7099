"""The report in a real headless browser (Debian's chromium): it loads without console messages, every
plot image is decoded, and a screenshot can be taken. Skipped when /usr/bin/chromium is missing."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pytest

from analysis import build_report, load_runs, load_study
from analysis.browser import CHROMIUM, console_messages, loaded_state, run_chromium, screenshot
from analysis.report import CHECK_SCRIPT
from analysis.synthetic import write_demo

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    write_demo(root / "runs", f"sqlite:///{root / 'sweep.db'}")
    return build_report(load_runs([root / "runs"]), root / "out", study=load_study(root / "sweep.db"))


def test_report_loads_without_console_messages_and_every_plot_decodes(report):
    n_plots = len(list(report.parent.glob("*.png")))
    result = run_chromium(report, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    state = loaded_state(result.stdout)
    assert state.get("data-ready") == "1", state
    assert state["data-plots"] == f"{n_plots}/{n_plots}" and n_plots >= 7
    assert state["data-runs"] == "5"


def test_checker_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img class="plot" src="data:image/png;base64,AAAA">'
                    "<script>undefinedFunction();</script></body></html>", encoding="utf-8")
    result = run_chromium(page, "--dump-dom")
    assert any("undefinedFunction" in line for line in console_messages(result.stderr))
    assert "data-ready" not in loaded_state(result.stdout)
    # the report's own load handler counts an undecodable plot as missing
    page.write_text('<html><body><img class="plot" src="data:image/png;base64,AAAA">'
                    '<script type="application/json" id="report-data">{"runs": []}</script>'
                    f"<script>{CHECK_SCRIPT}</script></body></html>", encoding="utf-8")
    result = run_chromium(page, "--dump-dom")
    assert loaded_state(result.stdout) == {"data-plots": "0/1", "data-runs": "0", "data-ready": "1"}


def test_screenshot(report, tmp_path):
    shot = screenshot(report, tmp_path / "dashboard.png", 1400, 2400)
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1400) and pixels.std() > 0.05
