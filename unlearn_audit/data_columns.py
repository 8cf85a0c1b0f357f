"""What a command needs to load a table or a text file: the ``--label-column`` / ``--text-column``
options and the preprocessing a checkpoint recorded.

``train`` fits the preprocessing on the training split and records it in the checkpoint
(``provenance["data"]["preprocessing"]``, part of the data provenance ``load_dataset`` returns);
``unlearn`` and ``evaluate`` must apply that record rather than fit again, so they pass the
checkpoint's provenance here. The named data sets (``credit-default``, ``pima``, ``tweets`` ...)
need no option at all.
"""

from __future__ import annotations

from typing import Annotated

import typer

from unlearn_audit.data import Dataset, load_dataset
from unlearn_audit.errors import DataError

__all__ = ["LabelColumnOption", "TextColumnOption", "load_data_for", "recorded_preprocessing"]

LabelColumnOption = Annotated[
    str | None,
    typer.Option(
        "--label-column", help="Label column of a csv:/parquet: table (recorded in the checkpoint)."
    ),
]
TextColumnOption = Annotated[
    str | None,
    typer.Option("--text-column", help="Text column of a csv:/parquet: file; makes it a text data set."),
]


def recorded_preprocessing(provenance: dict | None) -> dict | None:
    """The fitted table or text preprocessing a checkpoint's provenance holds, or None."""
    data = (provenance or {}).get("data")
    prep = data.get("preprocessing") if isinstance(data, dict) else None
    if prep is not None and not isinstance(prep, dict):
        raise DataError("the checkpoint's recorded preprocessing is not a mapping")
    return prep


def load_data_for(
    spec: str,
    *,
    split_seed: int = 0,
    label_column: str | None = None,
    text_column: str | None = None,
    provenance: dict | None = None,
) -> Dataset:
    """``load_dataset`` with the columns the user named and, when a checkpoint's ``provenance`` is
    given and holds one, its recorded preprocessing (which then wins over refitting).

    A label or text column that contradicts the recorded one is an error: the model was trained
    on another target or text.
    """
    prep = recorded_preprocessing(provenance)
    if prep is not None:
        for option, key, given in (
            ("--label-column", "label_column", label_column),
            ("--text-column", "text_column", text_column),
        ):
            if given is not None and prep.get(key) not in (None, given):
                raise DataError(
                    f"{option} {given!r} differs from the checkpoint's recorded {prep.get(key)!r}"
                )
    return load_dataset(
        spec, split_seed=split_seed, label_column=label_column, text_column=text_column, preprocessing=prep
    )
