"""The ``compare`` command (audit history), added to the app by :func:`register`.

``unlearn_audit.cli`` builds the app and calls ``register(app)``, as it does for the benchmark
commands; this module imports only :mod:`unlearn_audit.cli_common`, never the CLI itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_audit.cli_common import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    check_output_path,
    console_errors,
    info,
)

NEW_VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}


def compare(
    old_json: Annotated[Path, typer.Argument(help="The earlier audit (evaluate --json).")],
    new_json: Annotated[Path, typer.Argument(help="The later audit (evaluate --json).")],
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the comparison as HTML.")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every compared figure, not only those that changed.")
    ] = False,
) -> None:
    """Show what changed between two audits: verdict, checks, accuracies, robustness.

    Example: unlearn-audit compare release-1.json release-2.json --html changes.html

    Exit code follows the NEW audit's verdict: 0 pass, 1 fail, 3 inconclusive; 2 on bad input.
    """
    with console_errors():
        from unlearn_audit.compare import compare_results, format_comparison, write_comparison_html
        from unlearn_audit.fileio import check_distinct_paths
        from unlearn_audit.report import read_json

        if html_out is not None:
            check_output_path(html_out)
            check_distinct_paths({"--html": html_out}, {"OLD_JSON": old_json, "NEW_JSON": new_json})
        old, new = read_json(old_json), read_json(new_json)
        comparison = compare_results(old, new, old_name=str(old_json), new_name=str(new_json))
        typer.echo(format_comparison(comparison, show_all=show_all))
        if html_out is not None:
            info(f"wrote html: {write_comparison_html(comparison, html_out)}")
    raise typer.Exit(NEW_VERDICT_EXIT[comparison.new_verdict])


def register(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``; a second call adds nothing."""
    if any(command.callback is compare for command in app.registered_commands):
        return
    app.command("compare")(compare)
