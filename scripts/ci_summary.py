#!/usr/bin/env python3
"""The verdict of an audit as a CI job sees it: a Markdown job summary and the job's exit code.

Used by the repository's GitHub Action (action.yml) after ``unlearn-audit evaluate``::

    python scripts/ci_summary.py audit/result.json --evaluate-exit 3 --treat-inconclusive-as fail

Appends the summary to ``$GITHUB_STEP_SUMMARY`` (printed when unset), writes ``verdict=...`` to
``$GITHUB_OUTPUT`` when set, and exits 0 when the verdict passes the gate, 1 when it does not,
2 when the audit produced no readable result (an input error of evaluate).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def append(variable: str, text: str) -> bool:
    target = os.environ.get(variable)
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as f:
        f.write(text)
    return True


def main(argv: list[str] | None = None) -> int:
    from unlearn_audit.errors import UnlearnAuditError
    from unlearn_audit.report import read_json
    from unlearn_audit.summary import TREAT_INCONCLUSIVE, gate, markdown_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the JSON result written by evaluate --json")
    parser.add_argument("--treat-inconclusive-as", choices=TREAT_INCONCLUSIVE, default="fail")
    parser.add_argument("--evaluate-exit", type=int, default=None, help="evaluate's exit code, if known")
    parser.add_argument("--title", default="Unlearning audit")
    args = parser.parse_args(argv)
    try:
        result = read_json(args.result)
    except UnlearnAuditError as exc:
        why = f"exit code {args.evaluate_exit}" if args.evaluate_exit is not None else "no result"
        text = f"## {args.title}: :x: **ERROR**\n\nThe audit could not run ({why}): {exc}\n"
        append("GITHUB_OUTPUT", "verdict=error\n")
        if not append("GITHUB_STEP_SUMMARY", text):
            print(text)
        print(f"unlearn-audit: error: {exc}", file=sys.stderr)
        return 2
    text = markdown_summary(result, args.title)
    code = gate(result["verdict"], args.treat_inconclusive_as)
    if result["verdict"] == "inconclusive":
        text += f"\nINCONCLUSIVE is treated as **{args.treat_inconclusive_as}** by this job.\n"
    append("GITHUB_OUTPUT", f"verdict={result['verdict']}\n")
    if not append("GITHUB_STEP_SUMMARY", text):
        print(text)
    print(
        f"unlearning audit verdict: {result['verdict'].upper()} -> job {'passes' if code == 0 else 'fails'}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
