"""The PDF of the compliance report, printed by a headless Chromium from the HTML report.

A compliance file is usually a PDF. The HTML report already lays out for paper (its print
stylesheet keeps a check row, a plot or a heading on one page and gives the provenance the
last page), so the browser that renders the page faithfully is also the PDF renderer: no
second layout engine to keep in step. The browser runs with a throw-away profile and every
host name resolving nowhere, so printing can never fetch anything.

Which browser: ``$UNLEARN_AUDIT_BROWSER`` if set, else the first of :data:`BROWSERS` on the
``PATH``. Without one, :class:`RendererUnavailable` (exit code 2 on the command line) says how
to install one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from unlearn_audit.errors import ConfigError
from unlearn_audit.fileio import atomic_write_bytes, check_replaceable

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = (
    "install Chromium (Debian/Ubuntu: apt-get install chromium; macOS: brew install --cask chromium) "
    "or set UNLEARN_AUDIT_BROWSER to a Chrome/Chromium executable"
)
PRINT_SECONDS = 120


class RendererUnavailable(ConfigError):
    """No headless browser is installed to print the report with."""


def find_browser() -> str | None:
    """The Chromium-family executable to use, or None."""
    chosen = os.environ.get("UNLEARN_AUDIT_BROWSER")
    if chosen:
        return shutil.which(chosen)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    browser = find_browser()
    if browser is None:
        raise RendererUnavailable(f"no PDF renderer: no headless Chromium found; {INSTALL_HINT}")
    return browser


def headless_command(browser: str, profile: Path, *args: str) -> list[str]:
    """A headless, offline Chromium invocation with a throw-away profile.

    ``--no-sandbox`` only when running as root, where Chromium refuses to start otherwise
    (containers, CI images).
    """
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")
    return [*command, *args]


def run_headless(browser: str, *args: str, timeout: float = PRINT_SECONDS) -> subprocess.CompletedProcess:
    """Run one headless browser command in a fresh profile; stdout is the page output (text)."""
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-browser-") as profile:
        command = headless_command(browser, Path(profile), *args)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RendererUnavailable(f"{browser} did not finish within {timeout:.0f}s") from None
        except OSError as exc:
            raise RendererUnavailable(f"cannot run {browser}: {exc}") from None


def html_to_pdf(html: str, path: str | Path, browser: str | None = None) -> Path:
    """Print a self-contained HTML page to ``path`` (written atomically)."""
    browser = browser or require_browser()
    check_replaceable(path)
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-pdf-") as folder:
        page = Path(folder) / "report.html"
        page.write_text(html, encoding="utf-8")
        printed = Path(folder) / "report.pdf"
        done = run_headless(browser, "--no-pdf-header-footer", f"--print-to-pdf={printed}", page.as_uri())
        data = printed.read_bytes() if printed.is_file() else b""
        if not data.startswith(b"%PDF"):
            tail = " ".join(done.stderr.split()[-30:])
            raise RendererUnavailable(f"{browser} did not print a PDF (exit {done.returncode}): {tail}")
    return atomic_write_bytes(path, data)


def write_pdf(result, path: str | Path, browser: str | None = None) -> Path:
    """The compliance report of ``result`` (an AuditResult or a saved result dict) as a PDF."""
    from unlearn_audit.report import render_html

    return html_to_pdf(render_html(result), path, browser)
