"""An HTML template for `dvc plots show` / `dvc plots diff` that draws every chart offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so with no network its
charts stay blank. This template carries the three libraries inline instead, taken at run time
from the installed `vl-convert-python` package (nothing third-party lives in this repository).

How the page works: DVC (dvc-render) puts each chart in the page as an inline classic script
that calls a global `vegaEmbed(...)` while the page is still being parsed. The libraries come as
one ES module (`vl_convert.javascript_bundle`), and module scripts run only after parsing. So a
classic script in <head> first defines a stand-in `vegaEmbed` that queues its calls, and the
module, once it runs, installs the real `vegaEmbed` globally and replays the queue.

dvc-render fills the template with `str.replace` on `{plot_divs}` (required), `{scripts}` and
`{refresh_tag}`. The template leaves out `{scripts}`, where DVC would put its CDN script tags.
"""

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.files import atomic_write_text

# The vl-convert-python release whose JavaScript the template holds. This module is a dependency
# of the `plots_template` stage, so changing the pin reruns it; the stage refuses to run with
# any other installed release, so the template always holds the JavaScript named here.
VL_CONVERT_VERSION = "1.9.0"
# DVC's chart specs use the Vega-Lite v5 schema: bundle the newest Vega-Lite 5 that vl-convert
# ships. (Its Vega is 6, so vega-embed logs "The compiled spec uses Vega v5" in the browser's
# console; every chart still draws.)
VEGA_LITE_VERSION = "5.21"

PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

# Classic script: runs before DVC's inline chart scripts, which call vegaEmbed at once.
_STAND_IN = """\
window.vegaEmbed = function () {
  var args = arguments;
  return new Promise(function (resolve, reject) {
    (window.vegaEmbedQueue = window.vegaEmbedQueue || []).push([args, resolve, reject]);
  });
};"""

# Runs inside the bundle's module, where `vegaEmbed` is the real one.
_SNIPPET = """\
const queued = window.vegaEmbedQueue || [];
delete window.vegaEmbedQueue;
window.vegaEmbed = vegaEmbed;
for (const [args, resolve, reject] of queued) vegaEmbed(...args).then(resolve, reject);"""

_PAGE = """\
<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- {provenance} -->
    <script>
{stand_in}
    </script>
    <script type="module">
{bundle}
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def _vl_convert():
    try:
        import vl_convert
    except ImportError:
        raise PipelineError(
            "vl-convert-python is not installed, and the plots page takes its JavaScript "
            f"from it: run `pip install 'vl-convert-python=={VL_CONVERT_VERSION}.*'`."
        ) from None
    if vl_convert.__version__ != VL_CONVERT_VERSION:
        raise PipelineError(
            f"vl-convert-python {vl_convert.__version__} is installed, but the plots page is "
            f"pinned to {VL_CONVERT_VERSION} (VL_CONVERT_VERSION in src/pipeline/plots_page.py): "
            f"run `pip install 'vl-convert-python=={VL_CONVERT_VERSION}.*'`, or change the pin "
            "to move the page to the installed release."
        )
    return vl_convert


def provenance() -> str:
    """Which JavaScript the template holds, written into it as an HTML comment."""
    vl_convert = _vl_convert()
    return (
        f"vega {vl_convert.get_vega_version()}, vega-lite {VEGA_LITE_VERSION}, "
        f"vega-embed {vl_convert.get_vega_embed_version()}, from vl-convert-python "
        f"{vl_convert.__version__} (written by stages/plots_template.py)"
    )


def page_template() -> str:
    """The whole template: the libraries inline, a `{plot_divs}` slot, no network needed."""
    vl_convert = _vl_convert()
    bundle = vl_convert.javascript_bundle(_SNIPPET, vl_version=f"v{VEGA_LITE_VERSION}")
    # The bundle sits inside a <script> element: `</script` would end it early, and a
    # placeholder would be replaced by dvc-render. Neither occurs in 1.9.0; fail, don't guess.
    clash = [s for s in ("</script", "<!--", *PLACEHOLDERS) if s in bundle.lower()]
    if clash:
        raise RuntimeError(f"the vl-convert bundle contains {clash}: it cannot be inlined as is")
    return (
        _PAGE.replace("{provenance}", provenance())
        .replace("{stand_in}", _STAND_IN)
        .replace("{bundle}", bundle)
    )


def write_page_template(path: Path) -> str:
    """Write the template to `path` (atomically); return its provenance line."""
    atomic_write_text(path, page_template())
    return provenance()
