"""What every result records so it can be reproduced: versions, device, seeds, command, date."""

from __future__ import annotations

import datetime as _dt
import platform
import sys

import torch

from unlearn_audit import __version__


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or metadata missing
        return None


def environment(device: object = "cpu") -> dict:
    """Versions of the tool and the libraries that shape results, and where it ran."""
    return {
        "tool": "unlearn-audit",
        "tool_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "scikit_learn": _version("scikit-learn"),
        "adversarial_robustness_toolbox": _version("adversarial-robustness-toolbox"),
        "torchattacks": _version("torchattacks"),
        "device": str(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "command": " ".join(["unlearn-audit", *sys.argv[1:]]) if sys.argv else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
