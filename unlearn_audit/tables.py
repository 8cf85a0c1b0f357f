"""The tables of the benchmark and the robustness study, written as markdown, CSV, JSON and HTML.

Every run ends with ``<stem>.md``, ``.csv``, ``.json`` and ``.html`` in its output folder: the
markdown and the HTML page show the same :class:`Table`, the CSV has one column per statistic
(mean and std apart) for spreadsheets, and the JSON is the full result. All four are written
atomically, so an interrupted run never leaves a half-written table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from unlearn_audit.fileio import atomic_write_text
from unlearn_audit.report import page_environment, to_json

if TYPE_CHECKING:
    from unlearn_audit.bench import BenchmarkResult
    from unlearn_audit.runs import Stat
    from unlearn_audit.study import StudyResult


@dataclass(frozen=True)
class Table:
    """A rendered table: header, rows of cell strings, which columns are numeric."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    notes: tuple[str, ...] = ()
    subtitle: str = ""


# =========================================================================== formats


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table with the notes below it."""
    lines = [f"# {table.title}", ""]
    if table.subtitle:
        lines += [table.subtitle, ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for num in table.numeric) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def stat_cells(*stats: Stat | None) -> list[object]:
    """CSV cells ``mean, std`` of each statistic (two empty cells for a missing one)."""
    cells: list[object] = []
    for st in stats:
        cells += [st.mean, st.std] if st is not None else [None, None]
    return cells


def render_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def render_table_html(table: Table, provenance: Mapping[str, object]) -> str:
    """The self-contained page of ``templates/benchmark.html.j2`` (inline CSS, autoescaped)."""
    env, css = page_environment()
    shown = {
        k: provenance[k]
        for k in ("tool_version", "torch", "device", "date", "command", "wall_seconds")
        if k in provenance
    }
    return env.get_template("benchmark.html.j2").render(t=table, css=css, provenance=shown)


def result_dict(kind: str, result: Any, records: str) -> dict:
    """The JSON form of a benchmark or study result: ``kind``, its ``config``, ``rows`` and the
    per-seed records in field ``records`` (as lists of dicts), ``notes`` and ``provenance``."""
    return {
        "kind": kind,
        "config": result.config,
        "rows": [dataclasses.asdict(r) for r in result.rows],
        records: [dataclasses.asdict(r) for r in getattr(result, records)],
        "notes": list(result.notes),
        "provenance": result.provenance,
    }


class TableResult(Protocol):
    """A benchmark-like result: its JSON is ``to_dict()``, its HTML page shows ``provenance``."""

    @property
    def provenance(self) -> dict: ...

    def to_dict(self) -> dict: ...


_R = TypeVar("_R", bound=TableResult)


def write_tables(
    out_dir: str | Path, stem: str, result: _R, table: Table, csv: Callable[[_R], str]
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``.csv`` (``csv(result)``), ``.json`` and ``.html`` (atomically) to
    ``out_dir``: the markdown and the HTML page show ``table``. Returns the paths by format."""
    out = Path(out_dir)
    return {
        "markdown": atomic_write_text(out / f"{stem}.md", render_markdown(table)),
        "csv": atomic_write_text(out / f"{stem}.csv", csv(result)),
        "json": atomic_write_text(out / f"{stem}.json", to_json(result.to_dict())),
        "html": atomic_write_text(out / f"{stem}.html", render_table_html(table, result.provenance)),
    }


# =========================================================================== the benchmark


def benchmark_table(result: BenchmarkResult) -> Table:
    """The AMUN-style table of a benchmark result."""
    robustness = bool(result.config.get("robustness"))
    columns = ["Method", "Forget acc", "Retain acc", "Test acc", "MIA AUC", "Avg. Gap"]
    if robustness:
        columns.append("R-ACC")
    columns += ["Time (s)", "Verdict", "Note"]
    rows = []
    for r in result.rows:
        cells = [
            r.method,
            r.forget_acc.text(),
            r.retain_acc.text(),
            r.test_acc.text(),
            r.mia_auc.text(),
            r.avg_gap.text(),
        ]
        if robustness:
            cells.append(r.robust_acc.text() if r.robust_acc else "n/a")
        cells += [r.seconds.text(), r.verdict_text(), r.note]
        rows.append(tuple(cells))
    numeric = tuple(c not in ("Method", "Verdict", "Note") for c in columns)
    cfg = result.config
    subtitle = (
        f"{cfg['arch']} on {cfg['data']}, forget {cfg['forget']}, {cfg['seeds']} seed(s), "
        f"training epochs {cfg['epochs'] if cfg['epochs'] is not None else 'recipe default'}"
    )
    return Table("Unlearning benchmark", tuple(columns), tuple(rows), numeric, result.notes, subtitle)


CSV_STATS = ("forget_acc", "retain_acc", "test_acc", "mia_auc", "avg_gap", "seconds", "robust_acc")


def benchmark_csv(result: BenchmarkResult) -> str:
    header = ["method"]
    for name in CSV_STATS:
        header += [f"{name}_mean", f"{name}_std"]
    header += ["n_seeds", "verdicts", "mia_attack", "note"]
    rows = []
    for r in result.rows:
        cells: list[object] = [r.method, *stat_cells(*(getattr(r, name) for name in CSV_STATS))]
        cells += [r.seconds.n, r.verdict_text(), ";".join(r.mia_attacks), r.note]
        rows.append(cells)
    return render_csv(header, rows)


def write_benchmark(result: BenchmarkResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``benchmark.md``, ``.csv``, ``.json`` and ``.html`` (atomically) to ``out_dir``."""
    return write_tables(out_dir, "benchmark", result, benchmark_table(result), benchmark_csv)


# =========================================================================== the robustness study


def study_table(result: StudyResult) -> Table:
    columns = ("RQ", "Model", "Stage", "Method", "ACC (%)", "R-ACC (%)", "Gap (pp)", "Note")
    rows = []
    for r in result.rows:
        if r.measured:
            nums = tuple(s.text() if s else "n/a" for s in (r.accuracy, r.robust_accuracy, r.gap))
        else:
            nums = (r.status,) * 3
        rows.append((r.rq, r.model, r.stage, r.method, *nums, r.note))
    numeric = tuple(c in ("ACC (%)", "R-ACC (%)", "Gap (pp)") for c in columns)
    cfg = result.config
    subtitle = (
        f"{cfg['arch']} on {cfg['data']}, deletion {cfg['forget']}, {cfg['seeds']} seed(s); "
        "RQ1/RQ2: standard / adversarially trained model before the deletion, RQ3/RQ4: after"
    )
    return Table(
        "Robustness of unlearned models (RQ1-RQ4)", columns, tuple(rows), numeric, result.notes, subtitle
    )


def study_csv(result: StudyResult) -> str:
    header = [
        "rq",
        "model",
        "stage",
        "method",
        "status",
        "acc_mean",
        "acc_std",
        "racc_mean",
        "racc_std",
        "gap_mean",
        "gap_std",
        "n_seeds",
        "note",
    ]
    rows = []
    for r in result.rows:
        cells: list[object] = [r.rq, r.model, r.stage, r.method, r.status]
        cells += stat_cells(r.accuracy, r.robust_accuracy, r.gap)
        cells += [r.accuracy.n if r.accuracy else 0, r.note]
        rows.append(cells)
    return render_csv(header, rows)


def write_study(result: StudyResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``robustness-study.md``, ``.csv``, ``.json`` and ``.html`` (atomically)."""
    return write_tables(out_dir, "robustness-study", result, study_table(result), study_csv)
