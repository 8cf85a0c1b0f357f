"""Audit history: what changed between two audits of successive releases.

A team that audits every release wants to know what moved, not to re-read two reports: the
verdict, each check's status, value and interval, the accuracies and the robustness of every
model. Each row of a :class:`Comparison` says which way a figure moved (``up``/``down``,
``added``/``removed`` for a check only one audit ran) and, where the direction has a meaning on
its own, whether that is ``better`` or ``worse`` (a status towards pass, a higher retain, test
or robust accuracy). The forget accuracy and a check's value get no judgement: whether a
higher value is good depends on the check, and the check's status already says it.

Both inputs are saved results (:func:`unlearn_audit.report.read_json` has checked them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_audit.fileio import atomic_write_text

STATUS_RANK = {"fail": 0, "inconclusive": 1, "pass": 2}
# accuracies where higher is better on its own; the forget accuracy should approach the retrained one
HIGHER_IS_BETTER = {"retain", "test", "test_retained_classes", "robust_accuracy", "clean_accuracy"}
SAME_WITHIN = 5e-7  # results are rounded to 6 decimals


@dataclass(frozen=True, kw_only=True)
class Change:
    """One compared figure: where it is, its old and new value, which way it moved."""

    section: str  # verdict, check, accuracy, robustness, membership
    item: str  # the check or model (and role) the figure belongs to
    figure: str  # status, value, interval, ...
    old: str
    new: str
    direction: str  # same, up, down, changed, added, removed
    assessment: str = ""  # better, worse, or "" when the direction alone does not say

    @property
    def moved(self) -> bool:
        return self.direction != "same"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Everything :func:`compare_results` found, old audit first."""

    old_verdict: str
    new_verdict: str
    old_label: str
    new_label: str
    rows: list[Change] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return [row for row in self.rows if row.moved]


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_text(value[0])}, {_text(value[1])}]"
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _numeric_change(section: str, item: str, figure: str, old: object, new: object, judged: bool) -> Change:
    """Up or down for two numbers; ``judged`` when higher is better for this figure."""
    a, b = _number(old), _number(new)
    if a is not None and b is not None:
        direction = "same" if abs(b - a) <= SAME_WITHIN else ("up" if b > a else "down")
    else:
        direction = "same" if _text(old) == _text(new) else "changed"
    assessment = ""
    if judged and direction in ("up", "down"):
        assessment = "better" if direction == "up" else "worse"
    return Change(
        section=section, item=item, figure=figure, old=_text(old), new=_text(new),
        direction=direction, assessment=assessment,
    )  # fmt: skip


def _status_change(section: str, item: str, old: str | None, new: str | None) -> Change:
    if old is None or new is None:
        direction = "added" if old is None else "removed"
        return Change(section=section, item=item, figure="status", old=old or "-", new=new or "-",
                      direction=direction)  # fmt: skip
    rank_old, rank_new = STATUS_RANK[old], STATUS_RANK[new]
    direction = "same" if rank_old == rank_new else ("up" if rank_new > rank_old else "down")
    assessment = {"up": "better", "down": "worse"}.get(direction, "")
    return Change(section=section, item=item, figure="status", old=old.upper(), new=new.upper(),
                  direction=direction, assessment=assessment)  # fmt: skip


def _interval_change(item: str, old: list | None, new: list | None) -> Change:
    """An interval moves with its centre; the row also says whether it got narrower or wider."""
    if not old or not new:
        return _numeric_change("check", item, "interval", old, new, judged=False)
    centre = _numeric_change("check", item, "interval", sum(old) / 2, sum(new) / 2, judged=False)
    width_old, width_new = old[1] - old[0], new[1] - new[0]
    width = ""
    if abs(width_new - width_old) > SAME_WITHIN:
        width = ", narrower" if width_new < width_old else ", wider"
    direction = "same"
    if centre.moved or width:
        direction = (centre.direction if centre.moved else "changed") + width
    return Change(section="check", item=item, figure="interval", old=_text(old), new=_text(new),
                  direction=direction)  # fmt: skip


def _check_rows(old: dict, new: dict) -> list[Change]:
    old_checks = {c["name"]: c for c in old["checks"]}
    new_checks = {c["name"]: c for c in new["checks"]}
    names = list(new_checks) + [n for n in old_checks if n not in new_checks]
    rows = []
    for name in names:
        a, b = old_checks.get(name), new_checks.get(name)
        rows.append(_status_change("check", name, a and a["status"], b and b["status"]))
        if a is None or b is None:
            continue
        rows.append(_numeric_change("check", name, "value", a.get("value"), b.get("value"), judged=False))
        rows.append(_interval_change(name, a.get("ci"), b.get("ci")))
    return rows


def _model_rows(old: dict, new: dict) -> list[Change]:
    """Accuracy per role, robustness and the population attack's AUC, model by model."""
    rows = []
    for model in [m for m in new["models"] if m in old["models"]]:
        a, b = old["models"][model], new["models"][model]
        for role in [r for r in b["accuracy"] if r in a["accuracy"]]:
            judged = role in HIGHER_IS_BETTER and model == "unlearned"
            rows.append(
                _numeric_change("accuracy", f"{model} {role}", "accuracy", a["accuracy"][role],
                                b["accuracy"][role], judged=judged)
            )  # fmt: skip
        ra, rb = a.get("robustness") or {}, b.get("robustness") or {}
        for key in ("clean_accuracy", "robust_accuracy", "gap"):
            if key in ra or key in rb:
                judged = key in HIGHER_IS_BETTER and model == "unlearned"
                rows.append(_numeric_change("robustness", model, key, ra.get(key), rb.get(key), judged))
        pa = (a.get("mia") or {}).get("population_gated") or {}
        pb = (b.get("mia") or {}).get("population_gated") or {}
        if pa or pb:
            rows.append(
                _numeric_change("membership", model, "population AUC", pa.get("auc"), pb.get("auc"), False)
            )
    return rows


def _label(result: dict, fallback: str) -> str:
    """Which audit this is: the unlearned model's hash prefix and the audit date."""
    info = result.get("provenance", {}).get("models", {}).get("unlearned", {})
    sha = str(info.get("sha256") or "")[:12]
    date = str(result.get("provenance", {}).get("date") or "")
    return " ".join(p for p in (fallback, f"sha256 {sha}" if sha else "", date) if p)


def compare_results(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> Comparison:
    """Compare two saved audit results (schema-v1 dicts), old first."""
    verdict = _status_change("verdict", "verdict", old["verdict"], new["verdict"])
    return Comparison(
        old_verdict=old["verdict"],
        new_verdict=new["verdict"],
        old_label=_label(old, old_name),
        new_label=_label(new, new_name),
        rows=[verdict, *_check_rows(old, new), *_model_rows(old, new)],
    )


ARROWS = {"up": "^", "down": "v", "same": "=", "changed": "~", "added": "+", "removed": "-"}


def format_comparison(comparison: Comparison, show_all: bool = False) -> str:
    """The console view: the verdicts, then one line per figure that moved (every figure with show_all)."""
    rows = comparison.rows if show_all else comparison.changes
    lines = [
        f"old: {comparison.old_label}",
        f"new: {comparison.new_label}",
        f"verdict: {comparison.old_verdict.upper()} -> {comparison.new_verdict.upper()}",
    ]
    if not rows:
        lines.append("nothing changed")
        return "\n".join(lines)
    width = max(len(f"{r.section} {r.item} {r.figure}") for r in rows)
    for r in rows:
        where = f"{r.section} {r.item} {r.figure}"
        arrow = ARROWS.get(r.direction.split(",")[0], "~")
        verdict = f"  ({r.assessment})" if r.assessment else ""
        lines.append(f"  {arrow} {where:<{width}}  {r.old} -> {r.new}  {r.direction}{verdict}")
    unchanged = len(comparison.rows) - len(comparison.changes)
    if not show_all and unchanged:
        lines.append(f"  ({unchanged} figures unchanged; --all lists them)")
    return "\n".join(lines)


def render_comparison_html(comparison: Comparison) -> str:
    """The comparison as a self-contained page, styled like the report."""
    from unlearn_audit.report import STATUS_LABEL, page_environment

    env, css = page_environment()
    return env.get_template("compare.html.j2").render(c=comparison, css=css, status_label=STATUS_LABEL)


def write_comparison_html(comparison: Comparison, path: str | Path) -> Path:
    return atomic_write_text(path, render_comparison_html(comparison))
