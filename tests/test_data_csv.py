"""Tables from CSV files: parsing, the fitted preprocessing and its record, and every bad input as a
one-line DataError (exit 2 through the CLI).

References are computed by hand from the rows each test writes (training means and standard
deviations with numpy, one-hot columns listed explicitly).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.data import load_dataset
from unlearn_audit.data_domain import seeded_split
from unlearn_audit.data_tabular import MISSING, TablePreprocessor
from unlearn_audit.errors import DataError

HEADER = "age,income,city,label\n"
ROWS = [
    (30, 1.5, "paris", "yes"),
    (40, 2.5, "rome", "no"),
    (50, "", "paris", "yes"),
    (60, 4.0, "", "no"),
    (35, 3.0, "rome", "yes"),
    (45, 2.0, "oslo", "no"),
    (55, 1.0, "paris", "yes"),
    (65, 5.0, "rome", "no"),
    (25, 2.2, "paris", "yes"),
    (33, 3.3, "rome", "no"),
]


def _write(path, rows, header=HEADER):
    path.write_text(header + "".join(",".join(str(v) for v in r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_csv_is_standardised_and_one_hot_encoded_with_training_statistics(tmp_path):
    path = _write(tmp_path / "t.csv", ROWS)
    ds = load_dataset(f"csv:{path}", label_column="label", split_seed=0)
    prep = ds.provenance["preprocessing"]
    assert prep["kind"] == "table" and prep["classes"] == ["no", "yes"]
    assert prep["feature_names"][:2] == ["age", "income"]
    assert [c["name"] for c in prep["categorical"]] == ["city"]
    # the statistics are those of the training rows only: recompute them from the file
    train_idx, _ = seeded_split(len(ROWS), 0.2, 0)  # the split load_dataset makes
    train_rows = [ROWS[i] for i in train_idx]
    ages = np.asarray([r[0] for r in train_rows], dtype=float)
    assert len(train_rows) == len(ds.train) == 8
    assert prep["numeric"][0]["mean"] == pytest.approx(ages.mean()) and prep["numeric"][0][
        "std"
    ] == pytest.approx(ages.std())
    incomes = np.asarray([float(r[1]) for r in train_rows if r[1] != ""])
    assert prep["numeric"][1]["mean"] == pytest.approx(incomes.mean())
    # a missing income is the training mean: 0 after standardisation
    missing = [i for i, r in enumerate(train_rows) if r[1] == ""]
    for i in missing:
        assert float(ds.train.x[i, 1]) == pytest.approx(0.0, abs=1e-6)
    # one-hot: exactly one indicator per row; the missing city is its own category when training had it
    onehot = ds.train.x[:, 2:].numpy()
    assert np.all(onehot.sum(axis=1) == 1)
    assert prep["numeric"][0]["integer"] and not prep["numeric"][1]["integer"]
    assert ds.family == "tabular" and "table" in ds.provenance["family_reason"]
    cats = prep["categorical"][0]["categories"]
    assert (MISSING in cats) == any(r[2] == "" for r in train_rows)


def test_recorded_preprocessing_is_applied_at_audit_time(tmp_path):
    path = _write(tmp_path / "t.csv", ROWS)
    ds = load_dataset(f"csv:{path}", label_column="label", split_seed=0)
    again = load_dataset(f"csv:{path}", split_seed=0, preprocessing=ds.provenance["preprocessing"])
    assert ds.train.fingerprint() == again.train.fingerprint()
    # another file: a city training never saw has all-zero indicators, numbers use the recorded stats
    new = [(42, 2.0, "lisbon", "yes")] * 5 + [(42, 2.0, "paris", "no")] * 5
    other = load_dataset(
        f"csv:{_write(tmp_path / 'new.csv', new)}", preprocessing=ds.provenance["preprocessing"]
    )
    x = np.concatenate([other.train.x.numpy(), other.test.x.numpy()])
    y = np.concatenate([other.train.y.numpy(), other.test.y.numpy()])
    lisbon = x[y == 1]
    assert np.all(lisbon[:, 2:] == 0)
    num = ds.provenance["preprocessing"]["numeric"][0]
    assert lisbon[0, 0] == pytest.approx((42 - num["mean"]) / num["std"], rel=1e-5)
    refit = TablePreprocessor.from_dict(ds.provenance["preprocessing"]).to_dict()
    assert refit == ds.provenance["preprocessing"]


@pytest.mark.parametrize(
    ("content", "options", "pattern"),
    [
        (
            HEADER + "30,1.5,paris,yes\n40,2.5,rome\n",
            {"label_column": "label"},
            r"line 3 has 3 fields but the header has 4",
        ),
        (HEADER + "30,1.5,paris,yes,extra\n", {"label_column": "label"}, r"line 2 has 5 fields.*ragged"),
        (None, {"label_column": "target"}, r"label column 'target' does not exist; columns: \['age'"),
        (None, {}, r"name the label column \(--label-column NAME\)"),
        ("", {"label_column": "label"}, r"the file is empty"),
        (HEADER, {"label_column": "label"}, r"no data rows"),
        (
            HEADER + "".join(f"{i},1.0,paris,\n" for i in range(10)),
            {"label_column": "label"},
            r"label column 'label' has missing values",
        ),
    ],
    ids=[
        "ragged-short",
        "ragged-long",
        "no-such-label",
        "no-label-option",
        "empty",
        "header-only",
        "missing-labels",
    ],
)
def test_bad_csv_is_a_one_line_data_error(tmp_path, content, options, pattern):
    path = tmp_path / "bad.csv"
    if content is None:
        _write(path, ROWS)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(f"csv:{path}", **options)
    assert "\n" not in str(info.value)


def test_unknown_label_at_audit_time_and_non_numeric_value_are_refused(tmp_path):
    ds = load_dataset(f"csv:{_write(tmp_path / 't.csv', ROWS)}", label_column="label")
    prep = ds.provenance["preprocessing"]
    odd = _write(tmp_path / "odd.csv", [(30, 1.0, "paris", "maybe")] * 10)
    with pytest.raises(DataError, match=r"'maybe' in the label column 'label', not one of the classes"):
        load_dataset(f"csv:{odd}", preprocessing=prep)
    text = _write(tmp_path / "text.csv", [("thirty", 1.0, "paris", "yes")] * 10)
    with pytest.raises(DataError, match=r"numeric column 'age' holds 'thirty', not a number"):
        load_dataset(f"csv:{text}", preprocessing=prep)


def test_parquet_without_pyarrow_says_how_to_fix_it(tmp_path):
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "t.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match=r"needs the pyarrow package"):
            load_dataset(f"parquet:{path}", label_column="label")
    else:
        pytest.skip("pyarrow is installed")


def test_csv_through_the_cli_without_a_label_column_exits_2(run_cli, tmp_path):
    path = _write(tmp_path / "t.csv", ROWS)
    code, _, err = run_cli(["train", "--data", f"csv:{path}", "--arch", "mlp", "--out", tmp_path / "m.pt"])
    assert code == 2 and "name the label column" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_named_tables_and_the_mixture():
    pima = load_dataset("pima", split_seed=0)
    assert (len(pima.train), len(pima.test), pima.num_classes) == (426, 106, 2)
    assert pima.family == "tabular" and pima.input_shape == (7,)
    mix = load_dataset("mixture:n=300,d=3,k=3,sep=4", split_seed=1)
    assert (len(mix.train) + len(mix.test), mix.input_shape, mix.num_classes) == (300, (3,), 3)
    assert np.allclose(mix.train.x.mean(0).numpy(), 0, atol=1e-5)  # standardised on the training rows
    with pytest.raises(DataError, match=r"mixture:q=1: expected n=, d=, k= and sep="):
        load_dataset("mixture:q=1")


def test_text_csv_and_the_recorded_preprocessing_through_load_data_for(tmp_path):
    from unlearn_audit.data_columns import load_data_for

    path = tmp_path / "texts.csv"
    path.write_text(
        "msg,lab\n" + "".join(f"Hello world {i % 3},{i % 2}\n" for i in range(20)), encoding="utf-8"
    )
    ds = load_data_for(f"csv:{path}", label_column="lab", text_column="msg")
    assert ds.family == "text" and ds.train.x.dtype == torch.int64
    assert ds.provenance["preprocessing"]["words"][:2] == ["hello", "world"]
    again = load_data_for(f"csv:{path}", provenance={"data": ds.provenance})
    assert again.train.fingerprint() == ds.train.fingerprint()
    with pytest.raises(DataError, match=r"--label-column 'x' differs from the checkpoint's recorded 'lab'"):
        load_data_for(f"csv:{path}", label_column="x", provenance={"data": ds.provenance})
    with pytest.raises(DataError, match=r"text column 'nope' does not exist"):
        load_data_for(f"csv:{path}", label_column="lab", text_column="nope")
