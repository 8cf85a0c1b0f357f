#!/usr/bin/env python3
"""Regenerate the README's report screenshot (docs/report.png) and PDF (docs/report.pdf).

Both come from the demo's audit (``make demo`` writes demo-out/audit.json), rendered by the
same code as ``unlearn-audit report`` and photographed by headless Chromium::

    make demo && .venv/bin/python scripts/screenshot_report.py --audit demo-out/audit.json

Exit code 2 when the audit file is missing or no Chromium is installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from unlearn_audit.errors import UnlearnAuditError
    from unlearn_audit.fileio import atomic_write_bytes
    from unlearn_audit.pdf import require_browser, run_headless, write_pdf
    from unlearn_audit.report import read_json, render_html

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", type=Path, default=ROOT / "demo-out" / "audit.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of report.png, report.pdf")
    parser.add_argument("--width", type=int, default=1200, help="window width in pixels")
    parser.add_argument("--height", type=int, default=1500, help="height of the screenshot in pixels")
    args = parser.parse_args(argv)
    try:
        browser = require_browser()
        result = read_json(args.audit)
        with tempfile.TemporaryDirectory(prefix="unlearn-audit-shot-") as folder:
            page, shot = Path(folder) / "report.html", Path(folder) / "report.png"
            page.write_text(render_html(result), encoding="utf-8")
            run_headless(browser, "--hide-scrollbars", f"--window-size={args.width},{args.height}",
                         f"--screenshot={shot}", page.as_uri())  # fmt: skip
            if not shot.is_file():
                raise UnlearnAuditError(f"{browser} did not take the screenshot")
            png = atomic_write_bytes(args.out / "report.png", shot.read_bytes())
        pdf = write_pdf(result, args.out / "report.pdf", browser)
    except UnlearnAuditError as exc:
        print(f"screenshot_report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {png}\nwrote {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
