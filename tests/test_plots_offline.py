"""`dvc plots show` / `dvc plots diff` pages draw every plot with no network.

The end-to-end tests run the real `dvc repro` in a temporary git repo (with this repo's
.dvc/config, so the pages use the `plots_template` stage's template); headless Chromium then
opens each page with every network request refused and dumps the DOM, in which we count the
charts vega drew and the images that loaded, against the plots dvc.yaml declares.
"""

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import vl_convert
import yaml
from click.testing import CliRunner
from dvc_render.html import HTML, PAGE_HTML
from dvc_render.image import ImageRenderer

from pipeline.errors import PipelineError
from pipeline.plots_page import VL_CONVERT_VERSION, page_template
from tests.conftest import ROOT
from tests.projects import sh, trained_project

CHROMIUM = Path("/usr/bin/chromium")


def offline_e2e(test):
    """Marks an end-to-end test that needs headless Chromium."""
    needs_chromium = pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs headless Chromium at /usr/bin/chromium (Debian: apt-get install chromium)",
    )
    return pytest.mark.e2e(needs_chromium(test))


# Appended to a copy of the page: once everything has loaded, note how many images drew.
_IMAGE_PROBE = """
<script>
window.addEventListener("load", function () {
  var drawn = Array.prototype.filter.call(document.images, function (img) {
    return img.complete && img.naturalWidth > 0;
  });
  document.body.setAttribute("data-images-drawn", String(drawn.length));
});
</script>
"""


def declared_plots(project: Path) -> tuple[int, int]:
    """(charts, images) among the plots of the project's dvc.yaml top-level `plots:`."""
    plots = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    names = [next(iter(plot)) if isinstance(plot, dict) else plot for plot in plots]
    images = sum(Path(name).suffix.lower() in ImageRenderer.EXTENSIONS for name in names)
    return len(names) - images, images


class _DrawnCharts(HTMLParser):
    """Ids of vega-embed containers holding a rendered (non-empty) svg or canvas."""

    def __init__(self) -> None:
        super().__init__()
        self.container: str | None = None
        self.drawn: set[str] = set()
        self.images_drawn: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        classes = attr.get("class", "").split()
        if tag == "body" and "data-images-drawn" in attr:
            self.images_drawn = int(attr["data-images-drawn"])
        if "vega-embed" in classes:
            self.container = attr.get("id", "")
        elif tag in ("svg", "canvas") and "marks" in classes and self.container is not None:
            sized = float(attr.get("width") or 0) > 0 and float(attr.get("height") or 0) > 0
            if sized:
                self.drawn.add(self.container)


def drawn_offline(page: Path, scratch: Path) -> tuple[int, int]:
    """(charts, images) that drew when headless Chromium opened `page` with no network."""
    probe = page.with_name("probe.html")  # beside the page, so its relative image paths hold
    probe.write_text(page.read_text(encoding="utf-8") + _IMAGE_PROBE, encoding="utf-8")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        # No network: every proxied request goes to a closed port, every host name is unknown.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={scratch / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    env = {**os.environ, "HOME": str(scratch)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    parser = _DrawnCharts()
    parser.feed(result.stdout)
    assert parser.images_drawn is not None, "the page's load event never fired"
    return len(parser.drawn), parser.images_drawn


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project after `dvc repro`, with the results committed."""
    project = trained_project(tmp_path_factory, "plots")
    assert (project / "plots" / "template.html").is_file()
    return project


def test_template_has_the_slots_dvc_render_fills_and_no_cdn():
    template = page_template()
    assert template.count("{plot_divs}") == 1 and template.count("{refresh_tag}") == 1
    assert "{scripts}" not in template  # where DVC would put its CDN <script> tags
    assert '<meta charset="utf-8">' in template  # the bundle is not all ASCII
    assert f"vl-convert-python {VL_CONVERT_VERSION}" in template
    page = HTML(template).with_element('<div id="chart">x</div>').embed()
    assert '<div id="chart">x</div>' in page and "cdn.jsdelivr" not in page
    assert "{plot_divs}" not in page


def test_stage_refuses_another_vl_convert_release(monkeypatch, tmp_path):
    monkeypatch.setattr(vl_convert, "__version__", "0.1.0")
    with pytest.raises(
        PipelineError, match=rf"0\.1\.0 is installed.*pinned to {VL_CONVERT_VERSION}"
    ):
        page_template()
    spec = importlib.util.spec_from_file_location(
        "plots_template", ROOT / "stages/plots_template.py"
    )
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    result = CliRunner().invoke(stage.main, ["--output", str(tmp_path / "template.html")])
    assert result.exit_code == 1 and "Error: vl-convert-python 0.1.0" in result.output
    assert not (tmp_path / "template.html").exists()


@offline_e2e
def test_plots_show_draws_every_plot_offline(project, tmp_path):
    charts, images = declared_plots(project)
    assert charts > 0 and images > 0  # both kinds are checked
    sh(project, "dvc", "plots", "show", "-o", str(tmp_path / "show"))
    page = tmp_path / "show" / "index.html"
    assert drawn_offline(page, tmp_path) == (charts, images)
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf-8")


@offline_e2e
def test_plots_diff_draws_every_plot_offline(project, tmp_path):
    charts, images = declared_plots(project)
    sh(project, "dvc", "exp", "run", "-S", "train.lr=1e-3")  # the workspace now differs from HEAD
    sh(project, "dvc", "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    page = tmp_path / "diff" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html
    # Each chart draws both revisions in one; each image comes once per revision.
    assert drawn_offline(page, tmp_path) == (charts, 2 * images)


@offline_e2e
def test_dvc_default_page_draws_no_chart_offline(project, tmp_path):
    """The control: DVC's own page (libraries from a CDN) draws only the images here, so the
    checks above would fail without the offline template, and the network really is off."""
    charts, images = declared_plots(project)
    assert charts > 0
    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    out = tmp_path / "cdn"
    sh(project, "dvc", "plots", "show", "--html-template", str(default), "-o", str(out))
    assert "cdn.jsdelivr" in (out / "index.html").read_text(encoding="utf-8")
    assert drawn_offline(out / "index.html", tmp_path) == (0, images)


@offline_e2e
def test_plots_show_before_the_template_is_built(project, tmp_path):
    """In a fresh clone the DVC-cached template is missing: DVC then takes the config value as
    template text and stops. `dvc repro plots_template` (or `dvc pull`) writes it."""
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    failed = subprocess.run(
        ["dvc", "plots", "show", "-o", str(tmp_path / "early")],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode != 0
    assert re.search(r"template has to contain '\{plot_divs\}'", failed.stderr), failed.stderr
    out = sh(clone, "dvc", "repro", "plots_template")
    assert "Running stage 'plots_template'" in out and "Running stage 'train'" not in out
    sh(clone, "dvc", "plots", "show", "-o", str(tmp_path / "late"))
    assert "cdn.jsdelivr" not in (tmp_path / "late" / "index.html").read_text(encoding="utf-8")
