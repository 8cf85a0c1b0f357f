"""JSON, HTML and JUnit writers. All three render the same audit dict; every write is atomic.

Each writer takes the typed :class:`~unlearn_audit.results.AuditResult` of a fresh audit or the
schema-v1 dict of a saved one (:func:`read_json`), so old result files render like new ones.
"""

from __future__ import annotations

import base64
import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2

from unlearn_audit.errors import DataError
from unlearn_audit.fileio import atomic_write_text
from unlearn_audit.results import SCHEMA_VERSION, AuditResult

STATUS_LABEL = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
_REQUIRED_KEYS = ("schema_version", "verdict", "checks", "models", "distances", "provenance")


def result_dict(result: AuditResult | dict) -> dict:
    """The schema-v1 dict every writer renders: a typed result is converted, a loaded dict kept."""
    return result.to_dict() if isinstance(result, AuditResult) else result


# --------------------------------------------------------------------------- JSON


def to_json(result: AuditResult | dict) -> str:
    return (
        json.dumps(result_dict(result), indent=2, sort_keys=False, allow_nan=False, default=_json_default)
        + "\n"
    )


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_json(result: AuditResult | dict, path: str | Path) -> Path:
    return atomic_write_text(path, to_json(result))


def read_json(path: str | Path) -> dict:
    """Load a saved audit result, checking it is one this version can render."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audit result not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED_KEYS):
        raise DataError(f"{path}: not an unlearn-audit result (needs keys {', '.join(_REQUIRED_KEYS)})")
    if data["schema_version"] != SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema_version {data['schema_version']!r} is not supported (expected {SCHEMA_VERSION})"
        )
    problem = _shape_problem(data)
    if problem:
        raise DataError(f"{path}: not a valid unlearn-audit result ({problem})")
    recomputed = verdict_of_checks(data["checks"])
    if recomputed != data["verdict"]:
        raise DataError(
            f"{path}: refused: the file says {data['verdict']!r} but its checks give {recomputed!r} "
            "(edited or corrupt result)"
        )
    try:  # render once: a field the structure check let through must not fail later with a traceback
        render_html(data)
        to_junit(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, jinja2.TemplateError) as exc:
        raise DataError(f"{path}: not a valid unlearn-audit result ({type(exc).__name__}: {exc})") from None
    return data


def verdict_of_checks(checks: list[dict]) -> str:
    """The verdict the checks of a saved result give, by :func:`unlearn_audit.results.decide_verdict`."""
    from unlearn_audit.results import Check, decide_verdict

    rebuilt = [
        Check(c["name"], c["status"], None, None, c["detail"], gating=c.get("gating", True) is not False)
        for c in checks
    ]
    return decide_verdict(rebuilt)


def _shape_problem(data: dict) -> str | None:
    """What is wrong with the structure of a loaded result, or None."""
    if data["verdict"] not in STATUS_LABEL:
        return f"verdict {data['verdict']!r} is not pass, fail or inconclusive"
    if not isinstance(data["checks"], list):
        return "checks must be a list"
    for i, check in enumerate(data["checks"]):
        if not isinstance(check, dict):
            return f"check {i} is not a table"
        for key in ("name", "status", "detail"):
            if not isinstance(check.get(key), str):
                return f"check {i} lacks a text {key!r}"
        if check["status"] not in STATUS_LABEL:
            return f"check {check['name']!r} has status {check['status']!r}"
        if not isinstance(check.get("gating", True), bool):
            return f"check {check['name']!r} has a non-boolean gating flag"
        ci = check.get("ci")
        if ci is not None and not (
            isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)
        ):
            return f"check {check['name']!r} has a malformed interval"
    for key in ("models", "distances", "provenance"):
        if not isinstance(data[key], dict):
            return f"{key} must be a table"
    for name, model in data["models"].items():
        if not isinstance(model, dict) or not isinstance(model.get("accuracy"), dict):
            return f"model {name!r} lacks its accuracy table"
    return None


# --------------------------------------------------------------------------- JUnit


def to_junit(result: AuditResult | dict) -> str:
    """One ``testcase`` per check: fail -> ``failure``, inconclusive or advisory -> ``skipped``."""
    result = result_dict(result)
    checks = result["checks"]
    failures = sum(1 for c in checks if c["status"] == "fail")
    skipped = sum(1 for c in checks if c["status"] != "fail" and (c["status"] != "pass"))
    seconds = sum(float(v) for v in result.get("timings", {}).values())
    suite = ET.Element(
        "testsuite",
        name="unlearn-audit",
        tests=str(len(checks)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="verdict", value=str(result["verdict"]))
    for name, info in result.get("provenance", {}).get("models", {}).items():
        ET.SubElement(props, "property", name=f"{name}.sha256", value=str(info.get("sha256")))
    for c in checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"unlearn_audit.{c.get('group', 'audit')}", name=c["name"]
        )
        message = f"{c['status']}: {c['detail']}"
        if c["status"] == "fail":
            node = ET.SubElement(case, "failure", message=message[:1000], type="AuditCheckFailed")
            node.text = _check_text(c)
        elif c["status"] == "inconclusive":
            kind = "inconclusive" if c.get("gating", True) else "advisory (not gating)"
            ET.SubElement(case, "skipped", message=f"{kind}: {c['detail']}"[:1000])
        out = ET.SubElement(case, "system-out")
        out.text = _check_text(c)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _check_text(c: dict) -> str:
    ci = c.get("ci")
    ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a"
    head = f"status={c['status']} value={c.get('value')} threshold={c.get('threshold')} ci={ci_text}"
    return f"{head}\n{c['detail']}"


def write_junit(result: AuditResult | dict, path: str | Path) -> Path:
    return atomic_write_text(path, to_junit(result))


# --------------------------------------------------------------------------- HTML


def _figure_to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_COLORS = {"original": "#c0392b", "unlearned": "#2471a3", "retrained": "#229954"}


def _roc_figures(plots: dict) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    titles = {
        "population": "Population attack (strongest on the original model)",
        "paired": "Paired test against the retrained model",
        "reference": "U-LiRA against reference models",
    }
    for attack, per_model in plots.get("roc", {}).items():
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0))
        for name, roc in per_model.items():
            fpr, tpr = roc["fpr"], roc["tpr"]
            label = f"{name} (AUC {roc['auc']:.3f})" if roc.get("auc") is not None else name
            color = _COLORS.get(name)
            axes[0].plot(fpr, tpr, label=label, color=color)
            pts = [(f, t) for f, t in zip(fpr, tpr, strict=False) if f > 0 and t > 0]
            if pts:
                axes[1].plot([p[0] for p in pts], [p[1] for p in pts], label=label, color=color)
        for ax in axes:
            ax.plot([1e-4, 1], [1e-4, 1], ls="--", color="grey", lw=0.8)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        axes[0].set_xlim(0, 1)
        axes[0].set_ylim(0, 1)
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlim(1e-3, 1)
        axes[1].set_ylim(1e-3, 1)
        axes[0].set_title("ROC")
        axes[1].set_title("ROC, log-log (low false-positive regime)")
        axes[0].legend(fontsize=8, loc="lower right")
        fig.suptitle(titles.get(attack, attack))
        figures.append({"title": titles.get(attack, attack), "src": _figure_to_data_uri(fig)})
    return figures


def _histogram_figure(plots: dict) -> str | None:
    hists = plots.get("histograms", {})
    if not hists:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(hists), figsize=(4.2 * len(hists), 3.4), squeeze=False)
    role_colors = {"forget": "#c0392b", "retain": "#7f8c8d", "test": "#2471a3"}
    for ax, (name, h) in zip(axes[0], hists.items(), strict=False):
        edges = h["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=False)]
        width = edges[1] - edges[0]
        for role, dens in h["density"].items():
            ax.bar(centers, dens, width=width, alpha=0.45, label=role, color=role_colors.get(role))
        ax.set_title(f"{name} model")
        ax.set_xlabel("logit-scaled confidence  z_y - logsumexp(z_other)")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("share of examples")
    return _figure_to_data_uri(fig)


def _layer_figure(plots: dict) -> str | None:
    per_layer = plots.get("per_layer", {})
    if not per_layer:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(next(iter(per_layer.values())).keys())
    fig, ax = plt.subplots(figsize=(9.5, max(2.5, 0.28 * len(names) + 1)))
    height = 0.8 / len(per_layer)
    for i, (pair, values) in enumerate(per_layer.items()):
        ys = [j + i * height for j in range(len(names))]
        ax.barh(ys, [values.get(n, 0.0) for n in names], height=height, label=pair.replace("_", " "))
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))])
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("L2 distance of the tensor")
    ax.legend(fontsize=8)
    return _figure_to_data_uri(fig)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _breakable(name: str):
    """A snake_case name that a narrow column may wrap at its underscores, and nowhere else."""
    import markupsafe

    return markupsafe.Markup("_<wbr>").join(str(name).split("_"))


def template_dir() -> Path:
    """The templates: ``templates/`` next to the package in a checkout, else ``unlearn_audit.templates``.

    The checkout folder wins so that a source tree renders its own templates even when another
    tree is installed in editable mode (both map ``unlearn_audit.templates`` somewhere).
    """
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "report.html.j2").is_file() and (checkout / "__init__.py").is_file():
        return checkout
    from unlearn_audit import templates as package

    return Path(package.__file__).parent


def page_environment():
    """The jinja2 environment every HTML page is rendered with, and the shared stylesheet.

    Autoescaping is on and undefined names are errors, so a hostile string can never become
    markup and a template typo never renders as an empty cell.
    """
    import jinja2

    folder = template_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env, (folder / "report.css").read_text(encoding="utf-8")


def render_html(result: AuditResult | dict) -> str:
    """The self-contained compliance report (inline CSS and PNG plots, no network)."""
    result = result_dict(result)
    env, css = page_environment()
    env.filters["fmt"] = _fmt
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * float(v):.2f}%"
    env.filters["breakable"] = _breakable
    template = env.get_template("report.html.j2")
    plots = result.get("plots", {})
    return template.render(
        r=result,
        css=css,
        status_label=STATUS_LABEL,
        roc_figures=_roc_figures(plots),
        histogram=_histogram_figure(plots),
        layers=_layer_figure(plots),
        model_names=list(result["models"].keys()),
    )


def write_html(result: AuditResult | dict, path: str | Path) -> Path:
    return atomic_write_text(path, render_html(result))
