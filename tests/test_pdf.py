"""``unlearn-audit report audit.json --pdf audit.pdf``: the compliance report on paper.

The PDF is read back with pypdf: every check row whole on one page, every plot on exactly one
page, the provenance (model hashes, versions, command, date) on the last page. Without a
browser the command exits 2 with one line saying how to install one; that test always runs.
"""

from __future__ import annotations

import re

import pytest
from seeded_audit import seeded_audit

from unlearn_audit.pdf import find_browser
from unlearn_audit.report import read_json

needs_browser = pytest.mark.skipif(
    find_browser() is None,
    reason="no Chromium on PATH (apt-get install chromium, or set UNLEARN_AUDIT_BROWSER): PDF not tested",
)


def squeeze(text: str) -> str:
    """Text without whitespace: a PDF breaks lines (and long tokens) wherever the layout did."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """The seeded audit printed by ``report --pdf``, read back page by page."""
    pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF back (pip install pypdf)")
    if find_browser() is None:
        pytest.skip("no Chromium on PATH: PDF not tested")
    from unlearn_audit.cli import main

    out = tmp_path_factory.mktemp("pdf") / "audit.pdf"
    with pytest.raises(SystemExit) as done:
        main(["report", str(seeded_audit() / "audit.json"), "--pdf", str(out)])
    result = read_json(seeded_audit() / "audit.json")
    assert done.value.code == {"pass": 0, "fail": 1, "inconclusive": 3}[result["verdict"]]
    assert out.read_bytes().startswith(b"%PDF")
    return result, pypdf.PdfReader(out)


@needs_browser
def test_every_check_row_is_whole_on_one_page(printed):
    result, pdf = printed
    pages = [squeeze(page.extract_text()) for page in pdf.pages]
    for check in result["checks"]:
        head, tail = squeeze(check["detail"])[:40], squeeze(check["detail"])[-25:]
        holding = [i for i, text in enumerate(pages) if head in text]
        assert len(holding) == 1, f"{check['name']}: row start found on pages {holding}"
        assert tail in pages[holding[0]], f"{check['name']}: the row is cut by a page break"
        assert check["name"] in pages[holding[0]]


@needs_browser
def test_every_plot_is_on_exactly_one_page(printed):
    """A plot cut by a page break is drawn on both pages: each image object must be on one page."""
    result, pdf = printed
    pages_of: dict[int, list[int]] = {}
    for number, page in enumerate(pdf.pages):
        for ref in page.get("/Resources", {}).get("/XObject", {}).values():
            pages_of.setdefault(ref.idnum, []).append(number)
    assert len(pages_of) == len(result["plots"]["roc"]) + 2  # ROC per attack, histograms, layers
    assert all(len(pages) == 1 for pages in pages_of.values()), pages_of


@needs_browser
def test_provenance_is_on_the_last_page(printed):
    result, pdf = printed
    last = squeeze(pdf.pages[-1].extract_text())
    assert "Provenance" in last
    for info in result["provenance"]["models"].values():
        assert info["sha256"] in last
    for key in ("tool_version", "torch", "python", "date"):
        assert squeeze(str(result["provenance"][key])) in last, key
    assert squeeze(result["provenance"]["command"])[:60] in last
    assert not any("Provenance" in page.extract_text() for page in pdf.pages[:-1])


def test_no_renderer_exits_2_before_writing(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_BROWSER", str(tmp_path / "no-such-browser"))
    code, _, err = run_cli(
        ["report", seeded_audit() / "audit.json", "--pdf", tmp_path / "a.pdf", "--html", tmp_path / "a.html"]
    )
    assert code == 2
    assert "no PDF renderer" in err and "apt-get install chromium" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.pdf").exists() and not (tmp_path / "a.html").exists()


def test_pdf_refuses_a_folder_as_output(run_cli, tmp_path):
    (tmp_path / "out.pdf").mkdir()
    code, _, err = run_cli(["report", seeded_audit() / "audit.json", "--pdf", tmp_path / "out.pdf"])
    assert code == 2 and "folder" in err
