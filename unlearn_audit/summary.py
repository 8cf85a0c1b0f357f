"""Short views of finished audits: key figures, a Markdown job summary, an index of several reports.

The full report is for the person who signs off a deletion; these are for the places where an
audit is glanced at: a CI job summary (:func:`markdown_summary`, gated by :func:`gate`), and the
demo's three-row table and index page (:func:`key_figures`, :func:`write_index`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unlearn_audit.fileio import atomic_write_text

EMOJI = {"pass": ":white_check_mark:", "fail": ":x:", "inconclusive": ":warning:"}
TREAT_INCONCLUSIVE = ("pass", "fail")


def key_figures(result: dict) -> dict:
    """Verdict, check counts and the figures a reader compares first (None where not measured)."""
    models = result["models"]
    unlearned = models.get("unlearned", {})
    counts = {
        s: sum(1 for c in result["checks"] if c["status"] == s) for s in ("pass", "fail", "inconclusive")
    }
    mia = (unlearned.get("mia") or {}).get("population_gated") or {}
    return {
        "verdict": result["verdict"],
        "checks": counts,
        "forget_accuracy": unlearned.get("accuracy", {}).get("forget"),
        "retrained_forget_accuracy": models.get("retrained", {}).get("accuracy", {}).get("forget"),
        "test_accuracy": unlearned.get("accuracy", {}).get("test"),
        "population_auc": mia.get("auc"),
        "robust_accuracy": (unlearned.get("robustness") or {}).get("robust_accuracy"),
    }


def _num(value: object, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _cell(text: object) -> str:
    """A Markdown table cell: pipes and line breaks would break the table, markup is escaped."""
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def markdown_summary(result: dict, title: str = "Unlearning audit") -> str:
    """The verdict, every check and the accuracies, as GitHub-flavoured Markdown."""
    verdict = result["verdict"]
    lines = [f"## {title}: {EMOJI[verdict]} **{verdict.upper()}**", ""]
    lines += ["| Check | Status | Value | 95% interval | Reason |", "|---|---|---:|---:|---|"]
    for c in result["checks"]:
        ci = f"[{_num(c['ci'][0])}, {_num(c['ci'][1])}]" if c.get("ci") else "n/a"
        status = c["status"].upper() + ("" if c.get("gating", True) else " (advisory)")
        value = _num(c.get("value")) if isinstance(c.get("value"), int | float) else "n/a"
        lines.append(f"| `{_cell(c['name'])}` | {status} | {value} | {ci} | {_cell(c['detail'])} |")
    lines += [
        "",
        "| Model | Forget acc. | Retain acc. | Test acc. | Robust acc. |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        acc = m["accuracy"]
        robust = (m.get("robustness") or {}).get("robust_accuracy")
        row = [_num(acc.get(k)) for k in ("forget", "retain", "test")] + [_num(robust)]
        lines.append(f"| {_cell(name)} | " + " | ".join(row) + " |")
    sha = result.get("provenance", {}).get("models", {}).get("unlearned", {}).get("sha256")
    if sha:
        lines += ["", f"Unlearned model sha256 `{_cell(sha)}`."]
    return "\n".join(lines) + "\n"


def gate(verdict: str, treat_inconclusive_as: str = "fail") -> int:
    """The job's exit code: 0 when the verdict passes the gate, 1 otherwise."""
    if treat_inconclusive_as not in TREAT_INCONCLUSIVE:
        raise ValueError(f"treat_inconclusive_as must be pass or fail, got {treat_inconclusive_as!r}")
    if verdict == "pass" or (verdict == "inconclusive" and treat_inconclusive_as == "pass"):
        return 0
    return 1


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """One audit on the index page: what it audited and where its report is (relative link)."""

    label: str
    href: str
    result: dict


def summary_table(entries: Sequence[IndexEntry]) -> str:
    """A plain-text table, one row per audit: verdict and key figures."""
    head = f"{'audit':<22} {'verdict':<13} {'forget acc':>10} {'test acc':>9} {'MIA AUC':>8} {'R-ACC':>6}"
    head += "  checks"
    lines = [head, "-" * len(head)]
    for e in entries:
        k = key_figures(e.result)
        counts = ", ".join(f"{n} {s}" for s, n in k["checks"].items() if n)
        lines.append(
            f"{e.label:<22} {k['verdict'].upper():<13} {_num(k['forget_accuracy']):>10} "
            f"{_num(k['test_accuracy']):>9} {_num(k['population_auc']):>8} {_num(k['robust_accuracy']):>6}  "
            f"{counts}"
        )
    return "\n".join(lines)


def write_index(entries: Sequence[IndexEntry], path: str | Path, title: str = "Unlearning audits") -> Path:
    """One page linking several reports, with the verdict and key figures of each."""
    from unlearn_audit.report import STATUS_LABEL, page_environment

    env, css = page_environment()
    rows = [(e, key_figures(e.result)) for e in entries]
    page = env.get_template("index.html.j2").render(
        title=title, rows=rows, css=css, status_label=STATUS_LABEL, num=_num
    )
    return atomic_write_text(path, page)
