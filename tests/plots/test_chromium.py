"""The chart page in a real headless Chromium: every figure renders its traces, the page logs no errors, and a
screenshot shows the charts. tests/plots/install_chromium.sh (run by .ci/run) installs Debian's chromium."""

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from apps.plots.training_curves import main

# Runs first in <head>: records uncaught errors, rejected promises and console.error calls, and once the page has
# settled writes what every Plotly div holds, all as attributes of <html>, which --dump-dom prints.
PROBE = """<script>
(function () {
  var root = document.documentElement, errors = [];
  function record(message) {
    errors.push(String(message));
    root.setAttribute("data-page-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-page-errors", "[]");
  window.addEventListener("error", function (event) { record(event.message); });
  window.addEventListener("unhandledrejection", function (event) { record(event.reason); });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    setTimeout(function () {
      var figures = Array.prototype.map.call(document.querySelectorAll(".plotly-graph-div"), function (div) {
        return {
          id: div.id,
          rendered: div.classList.contains("js-plotly-plot") && div.querySelector("svg.main-svg") !== null,
          traces: div.querySelectorAll(".scatterlayer .trace").length,
        };
      });
      root.setAttribute("data-figures", JSON.stringify(figures));
    }, 1000);
  });
})();
</script>"""


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on PATH; `bash tests/plots/install_chromium.sh` installs Debian's (as .ci/run does)")


def run_chromium(tmp_path: Path, page: Path, *options: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"  # a fresh profile per launch
    command = [
        browser(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *options, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


class RootAttributes(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.attributes = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "html" and not self.attributes:
            self.attributes = dict(attrs)


def render(tmp_path: Path, page: Path) -> tuple[list[dict], list[str], list[str]]:
    """(figures as the browser drew them, errors the page raised, console lines Chromium logged) for `page`."""
    probed = page.with_name("probed-" + page.name)
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    result = run_chromium(tmp_path, probed, "--dump-dom")
    attributes = RootAttributes(result.stdout).attributes
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(attributes["data-figures"]), json.loads(attributes["data-page-errors"]), console


@pytest.fixture
def page(four_runs, tmp_path) -> Path:
    out = tmp_path / "curves.html"
    assert main(["--runs", *map(str, four_runs), "--out", str(out)]) == 0
    return out


def test_every_figure_renders_without_errors(page, tmp_path):
    figures, errors, console = render(tmp_path, page)
    tasks = ["arc_challenge", "boolq", "hellaswag", "mmlu", "triviaqa"]
    assert [f["id"] for f in figures] == [f"task-{task}" for task in tasks] + ["training-loss"]
    assert all(f["rendered"] and f["traces"] == 4 for f in figures), figures
    assert errors == []
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console


def test_the_check_sees_a_broken_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><head></head><body><div class="plotly-graph-div" id="lonely"></div>'
        '<script>console.error("no data"); drawCharts();</script></body></html>'
    )
    figures, errors, console = render(tmp_path, broken)
    assert figures == [{"id": "lonely", "rendered": False, "traces": 0}]
    assert errors == ["no data", "Uncaught ReferenceError: drawCharts is not defined"]
    assert any("Uncaught ReferenceError" in line for line in console)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_screenshot_shows_the_charts(page, tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    shots = {}
    for name, source in (("charts", page), ("blank", blank)):
        shots[name] = tmp_path / f"{name}.png"
        run_chromium(tmp_path, source, "--hide-scrollbars", "--window-size=1100,3400", f"--screenshot={shots[name]}")
        assert png_size(shots[name]) == (1100, 3400)
    # six figures of lines, text and grids compress far worse than an empty white page of the same size
    assert shots["charts"].stat().st_size > 4 * shots["blank"].stat().st_size


def test_the_published_charts_with_a_run_over_them_render_without_errors(dump_dirs, tmp_path):
    """The published Llama page (14 tasks x 16 runs) with one run of a recipe drawn over it: every figure renders its
    traces, the page logs no errors, and the screenshot shows charts."""
    run = dump_dirs.write(tmp_path / "mine", "LlamaCanon-1B-Nemo-1T-lr0.003", "ABCD", 0.003)
    page = tmp_path / "published.html"
    assert main(["--published", "llama", "--runs", str(run), "--out", str(page), "--log-x"]) == 0
    figures, errors, console = render(tmp_path, page)
    evaluated = {"arc_challenge", "boolq", "hellaswag", "mmlu", "triviaqa"}  # the run's tasks (conftest)
    assert len(figures) == 15 and figures[-1] == {"id": "training-loss", "rendered": True, "traces": 1}
    for figure in figures[:-1]:
        task = figure["id"].removeprefix("task-")
        assert figure["rendered"] and figure["traces"] == 16 + (task in evaluated), figure
    assert errors == []
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    shot = tmp_path / "published.png"
    run_chromium(tmp_path, page, "--hide-scrollbars", "--window-size=1100,1200", f"--screenshot={shot}")
    assert png_size(shot) == (1100, 1200) and shot.stat().st_size > 100_000  # lines and legends, not a blank page
