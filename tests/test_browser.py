"""The HTML report as a browser shows it: headless Chromium on the report of a seeded audit.

A probe script, put first in the page, records every error, console error and blocked request
and, once the page has loaded, what the reader sees: the verdict banner, every check row, every
plot decoded, nothing wider than the window. Chromium prints the page with the probe's findings
in it (``--dump-dom``). The report's own Content-Security-Policy forbids scripts; the test swaps
it for the same policy plus inline scripts, so any network request is still refused and
reported. Chromium also runs with every host name resolving nowhere.

Without Chromium the tests skip: ``apt-get install chromium`` (Debian/Ubuntu) or set
``UNLEARN_AUDIT_BROWSER`` to a Chrome/Chromium executable.
"""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path

import pytest
from seeded_audit import LONG_NAME, seeded_audit

from unlearn_audit.pdf import find_browser, run_headless
from unlearn_audit.report import read_json, render_html

pytestmark = pytest.mark.skipif(
    find_browser() is None,
    reason="no Chromium on PATH (apt-get install chromium, or set UNLEARN_AUDIT_BROWSER): "
    "the browser checks of the HTML report are skipped",
)

REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PROBE = """<script>(function () {
  var seen = [];
  var note = function (kind, text) { seen.push(kind + ": " + text); };
  var error = console.error;
  console.error = function () {
    note("console.error", Array.from(arguments).join(" "));
    error.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    note("error", e.message || (e.target && (e.target.src || e.target.href)) || "failed to load");
  }, true);
  window.addEventListener("unhandledrejection", function (e) { note("rejection", String(e.reason)); });
  document.addEventListener("securitypolicyviolation", function (e) {
    note("blocked request", e.blockedURI + " (" + e.violatedDirective + ")");
  });
  var shown = function (el) {
    var box = el.getBoundingClientRect(), style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && style.visibility !== "hidden" && style.display !== "none";
  };
  window.addEventListener("load", function () {
    var root = document.documentElement, width = root.clientWidth;
    var found = {
      errors: seen,
      requests: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
      scrollWidth: root.scrollWidth,
      clientWidth: width,
      banner: Array.from(document.querySelectorAll(".banner")).map(function (b) {
        return {shown: shown(b), text: b.innerText}; }),
      rows: Array.from(document.querySelectorAll("table.checks tbody tr")).map(function (r) {
        return {name: r.dataset.check, shown: shown(r)}; }),
      images: Array.from(document.images).map(function (i) {
        return {alt: i.alt, complete: i.complete, width: i.naturalWidth}; }),
      wide: Array.from(document.body.querySelectorAll("*")).filter(function (el) {
        return el.getBoundingClientRect().right > width + 0.5; }).slice(0, 5).map(function (el) {
        return el.tagName + " " + (el.textContent || "").slice(0, 60); })
    };
    var out = document.createElement("pre");
    out.id = "__probe";
    out.style.display = "none";
    out.textContent = JSON.stringify(found);
    document.body.appendChild(out);
  });
})();</script>"""


@pytest.fixture(scope="module")
def result() -> dict:
    """The seeded audit, with one check detail made long and unbreakable (a path-like token)."""
    loaded = copy.deepcopy(read_json(seeded_audit() / "audit.json"))
    loaded["checks"][0]["detail"] += " see /" + "/".join([LONG_NAME] * 3)
    return loaded


@pytest.fixture(scope="module")
def page(result) -> str:
    return render_html(result)


def probe(page: str, folder: Path, width: int) -> dict:
    """Load the page in headless Chromium ``width`` pixels wide; the probe's findings."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
    assert page.count(meta) == 1, "the report must carry its offline Content-Security-Policy"
    probed = page.replace(
        meta, meta.replace("'unsafe-inline'\"", "'unsafe-inline'; script-src 'unsafe-inline'\"")
    )
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    path = folder / f"probed-{width}.html"
    path.write_text(probed, encoding="utf-8")
    done = run_headless(
        find_browser(),
        f"--window-size={width},900",
        "--virtual-time-budget=5000",
        "--dump-dom",
        path.as_uri(),
    )
    found = re.search(r'<pre id="__probe"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, (
        f"the page did not finish loading in Chromium (exit {done.returncode}): {done.stderr[-800:]}"
    )
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module", params=[1280, 720], ids=["desktop", "a4-width"])
def seen(request, page, tmp_path_factory) -> dict:
    return probe(page, tmp_path_factory.mktemp("browser"), request.param)


def test_page_is_self_contained(page):
    """No address the browser could fetch: every src and href is inline (data:) or a fragment."""
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    assert all(link.startswith(("data:", "#")) for link in links), links
    assert not re.search(r"url\(\s*['\"]?(?!data:)", page), "a stylesheet url() would be fetched"
    assert "@import" not in page


def test_page_loads_without_errors_or_requests(seen):
    assert seen["errors"] == []
    assert [r for r in seen["requests"] if not r.startswith("data:")] == []


def test_verdict_and_every_check_row_are_visible(seen, result):
    assert len(seen["banner"]) == 1 and seen["banner"][0]["shown"]
    assert result["verdict"].upper() in seen["banner"][0]["text"]
    assert [r["name"] for r in seen["rows"]] == [c["name"] for c in result["checks"]]
    assert all(r["shown"] for r in seen["rows"]), [r["name"] for r in seen["rows"] if not r["shown"]]


def test_every_plot_decodes(seen):
    # ROC per attack (population, paired, reference, label-only), signal histograms, layer distances
    assert len(seen["images"]) >= 5
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]


def test_nothing_overflows_the_page(seen, page):
    assert LONG_NAME in page  # the long model path and the long detail are on the page ...
    assert seen["scrollWidth"] <= seen["clientWidth"], seen["wide"]  # ... and wrap inside it


def test_the_probe_sees_what_it_should(page, tmp_path):
    """The probe is not blind: a fetched image, a script error and a wide block are all reported."""
    broken = page.replace(
        "</body>",
        '<img src="https://example.com/logo.png"><div style="width:4000px">wide</div>'
        "<script>undefinedFunction()</script></body>",
    )
    seen = probe(broken, tmp_path, 1280)
    assert any("blocked request: https://example.com/logo.png" in e for e in seen["errors"])
    assert any("undefinedFunction" in e for e in seen["errors"])
    assert seen["scrollWidth"] > seen["clientWidth"]
    assert any(i["width"] == 0 for i in seen["images"])
