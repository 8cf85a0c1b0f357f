"""``unlearn-audit evaluate`` and ``unlearn-audit report`` end to end, in-process.

The setting is the one of ``test_audit.py`` (overlapping Gaussian classes, a memorising
MLP; ~5 s of training per module), given to the CLI as three role files and native
checkpoints. Three audits run once per module and write JSON, HTML and JUnit into folders
that do not exist yet:

* pass (exit 0): the unlearned model is retrained without the forget set (another seed);
* fail (exit 1): the "unlearned" model is the original itself;
* inconclusive (exit 3): the "original" never saw the forget set, so no test has power.

``report`` re-renders each saved JSON and exits with its verdict's code. Every bad input
is one ``unlearn-audit: error:`` line on stderr, exit code 2 and no traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import unlearn_audit
from unlearn_audit.cli import main
from unlearn_audit.data import TensorSet
from unlearn_audit.models import build_model, save_checkpoint
from unlearn_audit.training import TrainConfig, train_model

K = 10
SHAPE = (1, 8, 8)
EXIT = {"pass": 0, "fail": 1, "inconclusive": 3}
# The equivalence margin is 0.1 rather than 0.05: see test_audit.py's module docstring.
POLICY = """
[privacy]
mia_auc_margin = 0.1
[utility]
forget_accuracy_margin = 0.1
[statistics]
n_bootstrap = 200
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Invocation:
    args: tuple[str, ...]
    code: int
    out: str
    err: str


def invoke(args: Sequence[object]) -> Invocation:
    """Run ``unlearn-audit ARGS`` in-process (for module-scoped fixtures, where capsys is not available)."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Invocation(tuple(argv), code, out.getvalue(), err.getvalue())


def gaussian_blobs(seed: int = 0, sizes: tuple[int, int, int] = (400, 600, 1200), noise: float = 2.5):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, 64))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, K, n)
        z = means[y] + noise * rng.normal(size=(n, 64))
        return (1 / (1 + np.exp(-z))).astype(np.float32).reshape(n, *SHAPE), y.astype(np.int64)

    return tuple(draw(n) for n in sizes)


def train_checkpoint(x: np.ndarray, y: np.ndarray, seed: int, path: Path) -> Path:
    model = build_model("mlp", num_classes=K, input_shape=SHAPE, seed=seed)
    train_model(
        model,
        TensorSet(torch.from_numpy(x), torch.from_numpy(y)),
        TrainConfig(epochs=60, batch_size=64, lr=1e-3, seed=seed),
    )
    save_checkpoint(model, path, arch="mlp", num_classes=K, input_shape=SHAPE)
    return path


@dataclass(frozen=True)
class Setting:
    folder: Path
    files: dict[str, Path]  # forget / retain / test role files, policy
    models: dict[str, Path]  # original / retrained / honest

    def role_args(self) -> list[object]:
        return [
            "--forget-data",
            self.files["forget"],
            "--retain-data",
            self.files["retain"],
            "--test-data",
            self.files["test"],
        ]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    folder = tmp_path_factory.mktemp("cli")
    forget, retain, test = gaussian_blobs()
    files = {}
    for role, (x, y) in (("forget", forget), ("retain", retain), ("test", test)):
        files[role] = folder / f"{role}.npz"
        np.savez(files[role], x=x, y=y)
    files["policy"] = folder / "policy.toml"
    files["policy"].write_text(POLICY)
    both = (np.concatenate([forget[0], retain[0]]), np.concatenate([forget[1], retain[1]]))
    models = {
        "original": train_checkpoint(*both, seed=0, path=folder / "original.pt"),
        "retrained": train_checkpoint(*retain, seed=1, path=folder / "retrained.pt"),
        "honest": train_checkpoint(*retain, seed=2, path=folder / "honest.pt"),
    }
    return Setting(folder, files, models)


def evaluate_args(
    setting: Setting, original: str, unlearned: str, retrained: str | None = "retrained"
) -> list:
    args = ["evaluate", "--original", setting.models[original], "--unlearned", setting.models[unlearned]]
    if retrained:
        args += ["--retrained", setting.models[retrained]]
    return [
        *args,
        *setting.role_args(),
        "--policy",
        setting.files["policy"],
        "--no-robustness",
        "--device",
        "cpu",
    ]


CASES = {
    "pass": ("original", "honest"),
    "fail": ("original", "original"),
    "inconclusive": ("retrained", "honest"),
}


@pytest.fixture(scope="module")
def runs(setting: Setting) -> dict[str, tuple[Invocation, dict[str, Path]]]:
    out = {}
    for verdict, (original, unlearned) in CASES.items():
        folder = setting.folder / verdict / "reports" / "nested"  # none of these folders exists yet
        paths = {"json": folder / "audit.json", "junit": folder / "junit" / "audit.xml"}
        if verdict == "fail":  # the HTML report is the slow part: one is enough here (see test_report.py)
            paths["html"] = folder / "audit.html"
        args = evaluate_args(setting, original, unlearned)
        for kind, path in paths.items():
            args += [f"--{kind}", path]
        out[verdict] = (invoke(args), paths)
    return out


def assert_one_error_line(code: int, out: str, err: str, needle: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("unlearn-audit: error:"), err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in out + err
    assert out == ""


# --------------------------------------------------------------------------- verdicts and exit codes


@pytest.mark.parametrize("verdict", list(CASES))
def test_exit_code_of_each_verdict(runs, verdict: str) -> None:
    run, paths = runs[verdict]
    assert run.code == EXIT[verdict], run.err + run.out
    assert "Traceback" not in run.err
    assert f"\nverdict: {verdict.upper()}\n" in run.out
    for kind, path in paths.items():
        assert f"wrote {kind}: {path}" in run.out
        assert path.is_file()  # missing parent folders were created
    assert json.loads(paths["json"].read_text())["verdict"] == verdict


def test_the_failing_model_fails_through_membership_tests(runs) -> None:
    checks = {c["name"]: c for c in json.loads(runs["fail"][1]["json"].read_text())["checks"]}
    assert checks["membership_power"]["status"] == "pass"
    assert checks["mia_paired"]["status"] == "fail"
    assert checks["mia_population"]["status"] != "pass"
    assert checks["model_changed"]["status"] == "fail"


def test_the_inconclusive_audit_lacks_power_and_nothing_fails(runs) -> None:
    checks = json.loads(runs["inconclusive"][1]["json"].read_text())["checks"]
    power = next(c for c in checks if c["name"] == "membership_power")
    assert power["status"] == "inconclusive" and power["value"] == 0
    assert [c["name"] for c in checks if c["status"] == "fail"] == []


def test_console_summary_lists_every_check(runs) -> None:
    run, paths = runs["pass"]
    result = json.loads(paths["json"].read_text())
    for c in result["checks"]:
        line = next(li for li in run.out.splitlines() if li.strip().startswith(c["name"] + " "))
        assert c["status"].upper() in line
    for name, model in result["models"].items():
        acc = model["accuracy"]
        assert (
            f"{name:<10} forget {acc['forget']:.3f}  retain {acc['retain']:.3f}  test {acc['test']:.3f}"
            in run.out
        )


# --------------------------------------------------------------------------- provenance


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_provenance_names_every_model_and_data_file(runs, setting: Setting) -> None:
    result = json.loads(runs["pass"][1]["json"].read_text())
    prov = result["provenance"]
    expected = {"original": "original", "unlearned": "honest", "retrained": "retrained"}
    for role, model in expected.items():
        assert prov["models"][role]["path"] == str(setting.models[model])
        assert prov["models"][role]["sha256"] == _sha(setting.models[model])
        assert result["models"][role]["model"]["sha256"] == _sha(setting.models[model])
    for role in ("forget", "retain", "test"):
        assert result["data"]["provenance"][f"{role}_sha256"] == _sha(setting.files[role])
    assert prov["tool_version"] == unlearn_audit.__version__
    assert prov["torch"] == torch.__version__
    assert prov["numpy"] == np.__version__
    assert prov["seed"] == 0
    assert prov["policy_file"] == str(setting.files["policy"])
    date = dt.datetime.fromisoformat(prov["date"])
    assert date.tzinfo is not None and abs(dt.datetime.now(dt.UTC) - date) < dt.timedelta(hours=1)


def test_json_provenance_records_the_command(runs, setting: Setting) -> None:
    command = json.loads(runs["pass"][1]["json"].read_text())["provenance"]["command"]
    assert command.startswith("unlearn-audit evaluate")
    assert str(setting.models["honest"]) in command and "--retrained" in command


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize("verdict", list(CASES))
def test_report_rerenders_and_exits_with_the_saved_verdict(runs, verdict: str, tmp_path: Path) -> None:
    _, paths = runs[verdict]
    junit = tmp_path / "new" / "report.xml"
    run = invoke(["report", paths["json"], "--junit", junit])
    assert run.code == EXIT[verdict], run.err
    assert f"wrote junit: {junit}" in run.out
    assert junit.read_bytes() == paths["junit"].read_bytes()  # the same result renders the same file


def test_report_rerenders_the_same_html(runs, tmp_path: Path) -> None:
    _, paths = runs["fail"]
    html = tmp_path / "report.html"
    run = invoke(["report", paths["json"], "--html", html])
    assert run.code == EXIT["fail"], run.err
    assert f"wrote html: {html}" in run.out
    assert html.read_bytes() == paths["html"].read_bytes()  # plots included: rendering is deterministic


def test_report_without_an_output_is_a_usage_error(runs, run_cli) -> None:
    code, out, err = run_cli(["report", runs["pass"][1]["json"]])
    assert_one_error_line(code, out, err, "nothing to write")


def _saved(runs) -> dict:
    return json.loads(runs["fail"][1]["json"].read_text())


def _foreign(edit):
    def make(runs) -> str:
        data = _saved(runs)
        edit(data)
        return json.dumps(data)

    return make


FOREIGN_JSON = {
    "not-json": (lambda runs: "{ this is not json", "not valid JSON"),
    "binary": (lambda runs: "\udcff", "not valid JSON"),
    "a-list": (lambda runs: "[1, 2, 3]", "not an unlearn-audit result"),
    "another-tool": (
        lambda runs: json.dumps({"verdict": "pass", "tests": []}),
        "not an unlearn-audit result",
    ),
    "newer-schema": (_foreign(lambda d: d.update(schema_version=2)), "schema_version 2"),
    # right top-level keys, wrong structure inside: caught before anything is rendered or written
    "unknown-verdict": (_foreign(lambda d: d.update(verdict="maybe")), "verdict"),
    "checks-not-a-list": (_foreign(lambda d: d.update(checks="all good")), "checks"),
    "check-without-status": (_foreign(lambda d: d["checks"][0].pop("status")), "status"),
    "models-not-a-table": (_foreign(lambda d: d.update(models=[])), "models"),
}


@pytest.mark.parametrize("case", list(FOREIGN_JSON))
def test_report_rejects_corrupt_or_foreign_json(
    runs, run_cli, tmp_path: Path, case: str, monkeypatch
) -> None:
    import unlearn_audit.report as report

    monkeypatch.setattr(report, "_roc_figures", lambda plots: [])  # plots are slow and not what is tested
    monkeypatch.setattr(report, "_histogram_figure", lambda plots: None)
    monkeypatch.setattr(report, "_layer_figure", lambda plots: None)
    make, needle = FOREIGN_JSON[case]
    path = tmp_path / "foreign.json"
    path.write_bytes(make(runs).encode("utf-8", "surrogateescape"))
    html, junit = tmp_path / "out.html", tmp_path / "out.xml"
    code, out, err = run_cli(["report", path, "--junit", junit, "--html", html])
    assert_one_error_line(code, out, err, needle)
    assert not html.exists() and not junit.exists()


def test_report_of_a_missing_file(run_cli, tmp_path: Path) -> None:
    code, out, err = run_cli(["report", tmp_path / "nope.json", "--html", tmp_path / "x.html"])
    assert_one_error_line(code, out, err, "not found")


# --------------------------------------------------------------------------- bad inputs


class Evil:
    """Unpickling this would create a file: a model file must never be unpickled freely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _write_roles(folder: Path, **overrides) -> list[object]:
    """Small role files (1x8x8 unless overridden); returns the three role options."""
    rng = np.random.default_rng(0)
    args: list[object] = []
    for role in ("forget", "retain", "test"):
        x, y = overrides.get(role, (rng.random((50, *SHAPE)).astype(np.float32), np.arange(50) % K))
        path = folder / f"{role}.npz"
        np.savez(path, x=x, y=y)
        args += [f"--{role}-data", path]
    return args


def _bad_input(name: str, setting: Setting, tmp: Path) -> tuple[list[object], str]:
    """The command line of one bad-input case and a word its error message must contain."""
    models = setting.models
    base = ["evaluate", "--original", models["original"], "--unlearned", models["honest"]]
    roles = setting.role_args()
    rng = np.random.default_rng(1)
    if name == "missing-model":
        return [
            "evaluate",
            "--original",
            tmp / "nope.pt",
            "--unlearned",
            models["honest"],
            *roles,
        ], "not found"
    if name == "corrupt-model":
        bad = tmp / "corrupt.pt"
        bad.write_bytes(b"\x00garbage" * 10)
        return ["evaluate", "--original", models["original"], "--unlearned", bad, *roles], "corrupt.pt"
    if name == "truncated-model":
        bad = tmp / "truncated.pt"
        bad.write_bytes(models["original"].read_bytes()[:3000])
        return ["evaluate", "--original", models["original"], "--unlearned", bad, *roles], "truncated.pt"
    if name == "pickle-payload":
        bad = tmp / "evil.pt"
        torch.save({"format": "unlearn-audit-checkpoint", "payload": Evil(tmp / "pwned")}, bad)
        return ["evaluate", "--original", models["original"], "--unlearned", bad, *roles], "refused"
    if name == "wrong-input-shape":
        small = {
            r: (rng.random((50, 1, 4, 4)).astype(np.float32), np.arange(50) % K)
            for r in ("forget", "retain", "test")
        }
        return [*base, *_write_roles(tmp, **small)], "does not accept inputs"
    if name == "label-out-of-range":
        forget = (rng.random((50, *SHAPE)).astype(np.float32), np.full(50, 12))
        return [*base, *_write_roles(tmp, forget=forget)], "12"
    if name == "negative-label":
        forget = (rng.random((50, *SHAPE)).astype(np.float32), np.full(50, -1))
        return [*base, *_write_roles(tmp, forget=forget)], "labels must be >= 0"
    if name == "nan-in-role-file":
        x = rng.random((50, *SHAPE)).astype(np.float32)
        x[3, 0, 2, 2] = np.nan
        return [*base, *_write_roles(tmp, test=(x, np.arange(50) % K))], "NaN"
    if name == "empty-forget-set":
        forget = (np.zeros((0, *SHAPE), np.float32), np.zeros(0, np.int64))
        return [*base, *_write_roles(tmp, forget=forget)], "empty"
    if name == "empty-forget-index-file":
        (tmp / "empty.txt").write_text("# nothing to forget\n")
        return [*base, "--data", "digits", "--forget", tmp / "empty.txt"], "empty"
    if name == "unknown-option":
        return [*base, *roles, "--forget-everything"], "--forget-everything"
    if name == "data-without-forget":
        return [*base, "--data", "digits"], "--forget"
    if name == "data-and-role-files":
        return [*base, "--data", "digits", "--forget", "class:3", *roles], "not both"
    if name == "two-of-three-role-files":
        return [*base, *roles[:4]], "--test-data"
    if name == "unknown-policy-key":
        policy = tmp / "policy.toml"
        policy.write_text("[privacy]\nmargin = 0.1\n")
        return [*base, *roles, "--policy", policy], "privacy.margin"
    if name == "npz-that-is-a-pickle":
        bad = tmp / "forget.npz"
        bad.write_bytes(b"\x80\x04K\x01.")
        return [*base, "--forget-data", bad, *roles[2:]], "not a readable .npz"
    raise AssertionError(name)


BAD_INPUTS = [
    "missing-model",
    "corrupt-model",
    "truncated-model",
    "pickle-payload",
    "wrong-input-shape",
    "label-out-of-range",
    "negative-label",
    "nan-in-role-file",
    "empty-forget-set",
    "empty-forget-index-file",
    "unknown-option",
    "data-without-forget",
    "data-and-role-files",
    "two-of-three-role-files",
    "unknown-policy-key",
    "npz-that-is-a-pickle",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_exit_2(setting: Setting, run_cli, tmp_path: Path, case: str) -> None:
    args, needle = _bad_input(case, setting, tmp_path)
    json_out = tmp_path / "audit.json"
    code, out, err = run_cli([*args, "--no-robustness", "--device", "cpu", "--json", json_out])
    assert_one_error_line(code, out, err, needle)
    assert not json_out.exists()
    assert not (tmp_path / "pwned").exists()  # the pickle payload never ran


def test_a_model_with_nan_weights_is_an_input_error(setting: Setting, run_cli, tmp_path: Path) -> None:
    obj = torch.load(setting.models["original"], weights_only=True)
    first = next(iter(obj["state_dict"]))
    obj["state_dict"][first][0, 0] = float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(obj, bad)
    args = evaluate_args(setting, "original", "original", retrained=None)
    args[args.index(setting.models["original"], 3)] = bad  # the unlearned model
    code, out, err = run_cli(["-q", *args])
    assert_one_error_line(code, out, err, "NaN")
