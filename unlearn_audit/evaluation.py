"""``evaluate_audit``: everything ``unlearn-audit evaluate`` does around the audit itself.

It checks the inputs as a hostile supplier could shape them (outputs that would overwrite an
input or each other, the same model given as unlearned and retrained, a forget set other than
the one the models were made for, models that disagree on their number of outputs), loads the
models (TorchScript only when trusted) under the watchdog's time limit, gathers the reference
models (listing each with its SHA-256), runs :func:`unlearn_audit.audit.evaluate` and writes
the requested reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_audit.data import Roles, load_dataset, make_roles
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.fileio import check_distinct_paths
from unlearn_audit.models import LoadedModel, load_model, resolve_device
from unlearn_audit.progress import ProgressFactory, no_progress
from unlearn_audit.reference_models import ReferenceSet, load_reference_dir, train_reference_set
from unlearn_audit.watchdog import default_timeout, set_limit, validate_timeout


def resolve_roles(
    data: str | None,
    forget: str | None,
    forget_data: str | Path | None,
    retain_data: str | Path | None,
    test_data: str | Path | None,
    *,
    seed: int = 0,
    split_seed: int = 0,
) -> Roles:
    """The two ways of naming the roles: ``--data`` with ``--forget``, or three role files."""
    from unlearn_audit.data import load_role_files

    _check_role_sources(data, forget, forget_data, retain_data, test_data)
    if data is not None:
        return make_roles(load_dataset(data, split_seed=split_seed), forget, seed=seed)  # type: ignore[arg-type]
    return load_role_files(forget_data, retain_data, test_data)  # type: ignore[arg-type]


def _check_role_sources(data, forget, forget_data, retain_data, test_data) -> None:
    files = [forget_data, retain_data, test_data]
    if data is not None:
        if any(files):
            raise ConfigError(
                "give either `data` with `forget`, or the three role files, not both",
                param=("data", "forget"),
            )
        if forget is None:
            raise ConfigError(
                "`data` needs `forget` (class:K, random:F or an index file)", param=("data", "forget")
            )
        return
    if all(files):
        if forget is not None:
            raise ConfigError(
                "`forget` goes with `data`; the role files already name the forget set",
                param=("forget", "data"),
            )
        return
    if any(files):
        names = ("forget_data", "retain_data", "test_data")
        missing = [n for n, f in zip(names, files, strict=True) if not f]
        shown = ", ".join(f"`{n}`" for n in missing)
        raise ConfigError(f"role files need all three; missing {shown}", param=missing)
    raise ConfigError(
        "name the data: `data` DATA `forget` SPEC, or `forget_data`/`retain_data`/`test_data`",
        param=("data", "forget", "forget_data", "retain_data", "test_data"),
    )


@dataclass(frozen=True)
class EvaluateOutputs:
    result: dict
    verdict: str
    written: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class _Inputs:
    """The audit's inputs once checked and loaded."""

    roles: Roles
    original: LoadedModel
    unlearned: LoadedModel
    retrained: LoadedModel | None


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest:
    """Everything ``evaluate`` can be asked (the keywords of :func:`evaluate_audit`).

    ``timeout``: seconds one forward pass of a ``.pt2``/TorchScript model may take (``None``:
    ``UNLEARN_AUDIT_TIMEOUT`` or 300 s; 0: no limit). ``forget_seed``: the seed of a ``random:``
    forget set (default: the one the checkpoints recorded, else ``seed``). ``no_cache``: train
    reference models afresh, neither reading nor writing the cache.
    """

    original: str | Path
    unlearned: str | Path
    retrained: str | Path | None = None
    data: str | None = None
    forget: str | None = None
    forget_data: str | Path | None = None
    retain_data: str | Path | None = None
    test_data: str | Path | None = None
    arch: str | None = None
    policy_path: str | Path | None = None
    json_out: str | Path | None = None
    html_out: str | Path | None = None
    junit_out: str | Path | None = None
    pdf_out: str | Path | None = None
    reference_models: int = 0
    reference_dir: str | Path | None = None
    robustness: bool = False
    robust_samples: int = 500
    robust_eps: float | None = None
    robust_steps: int | None = None
    label_only: str | None = None
    seed: int = 0
    forget_seed: int | None = None
    split_seed: int = 0
    device: str = "auto"
    cache_dir: str | Path | None = None
    no_cache: bool = False
    executor: str = "inprocess"
    ray_address: str | None = None
    mixed_precision: bool = False
    trust_torchscript: bool = False
    timeout: float | None = None
    progress_factory: ProgressFactory = no_progress
    say: Callable[[str], None] | None = None
    command: str | None = None

    def check_paths(self) -> None:
        """No output may name an input or another output."""
        outputs = {"json_out": self.json_out, "html_out": self.html_out, "junit_out": self.junit_out}
        outputs["pdf_out"] = self.pdf_out
        inputs = {"original": self.original, "unlearned": self.unlearned, "retrained": self.retrained}
        inputs |= {"policy_path": self.policy_path, "forget_data": self.forget_data}
        inputs |= {"retain_data": self.retain_data, "test_data": self.test_data}
        check_distinct_paths(outputs, inputs)


def evaluate_audit(**options) -> EvaluateOutputs:
    """Check and load everything, run :func:`unlearn_audit.audit.evaluate`, write the outputs.

    ``options`` are the fields of :class:`EvaluateRequest`.
    """
    from unlearn_audit.audit import evaluate
    from unlearn_audit.policy import load_policy

    req = EvaluateRequest(**options)
    _check_evaluate_options(req.reference_models, req.reference_dir, req.label_only)
    req.check_paths()
    if req.pdf_out:
        from unlearn_audit.pdf import require_browser

        require_browser()  # before any long work
    set_limit(default_timeout() if req.timeout is None else _timeout(req.timeout))
    policy = load_policy(req.policy_path)
    dev = resolve_device(req.device)
    loaded = _load_inputs(req, dev)
    refs = _reference_models(loaded, req, dev)
    robust_fn = None
    if req.robustness:
        robust_fn = _robustness_measure(
            loaded.roles, samples=req.robust_samples, eps=req.robust_eps, steps=req.robust_steps,
            seed=req.seed, device=dev, original=loaded.original.module,
        )  # fmt: skip
    provenance = {
        "policy_file": str(req.policy_path) if req.policy_path else None,
        "timeout_seconds": req.timeout,
    }
    if refs is not None:
        provenance["reference_models"] = refs.listing
    if req.command:
        provenance["command"] = req.command
    result = evaluate(
        loaded.original,
        loaded.unlearned,
        loaded.roles,
        retrained=loaded.retrained,
        policy=policy,
        seed=req.seed,
        device=dev,
        reference_models=refs.models if refs else None,
        reference_note=refs.note if refs else "",
        robustness=robust_fn,
        label_only=req.label_only,
        progress=req.say,
        extra_provenance=provenance,
    ).to_dict()
    written = _write_reports(
        result, json_out=req.json_out, html_out=req.html_out, junit_out=req.junit_out, pdf_out=req.pdf_out
    )
    return EvaluateOutputs(result, result["verdict"], written)


def _timeout(seconds: float) -> float | None:
    """The per-call model limit, checked by :func:`validate_timeout` (the error names ``timeout``)."""
    try:
        return validate_timeout(seconds, "`timeout`")
    except ConfigError as exc:
        raise ConfigError(str(exc), param="timeout") from None


def _check_evaluate_options(reference_models: int, reference_dir: str | Path | None, label_only: str | None):
    if reference_models and reference_dir:
        raise ConfigError(
            "give `reference_models` N or `reference_dir` DIR, not both",
            param=("reference_models", "reference_dir"),
        )
    if label_only not in (None, "gap", "boundary"):
        raise ConfigError(f"`label_only` must be gap or boundary, got {label_only!r}", param="label_only")
    if reference_models < 0:
        raise ConfigError(
            f"`reference_models` must be >= 0, got {reference_models}", param="reference_models"
        )


def _load_inputs(req: EvaluateRequest, device: torch.device) -> _Inputs:
    """Models and roles; the forget set is drawn with the seed the checkpoints recorded."""
    from unlearn_audit.data import load_role_files
    from unlearn_audit.forget_record import choose_forget_seed, verify_forget_set

    _check_role_sources(req.data, req.forget, req.forget_data, req.retain_data, req.test_data)
    dataset = load_dataset(req.data, split_seed=req.split_seed) if req.data is not None else None
    file_roles = None
    if dataset is None:
        file_roles = load_role_files(req.forget_data, req.retain_data, req.test_data)  # type: ignore[arg-type]
    like = dataset if dataset is not None else file_roles
    paths = (req.original, req.unlearned, req.retrained)
    models = _load_models(paths, like.num_classes, like.input_shape, req.arch, device, req.trust_torchscript)
    if dataset is None:
        roles = file_roles
    else:
        chosen = choose_forget_seed(models, req.forget_seed, req.seed)
        roles = make_roles(dataset, req.forget, seed=chosen)  # type: ignore[arg-type]
        verify_forget_set(models, dataset, req.forget, roles.provenance["forget_sha256"], chosen)  # type: ignore[arg-type]
    _check_output_widths(models, roles, device)
    return _Inputs(
        roles=roles,
        original=models["original"],
        unlearned=models["unlearned"],
        retrained=models.get("retrained"),
    )


def _load_models(paths, num_classes, input_shape, arch, device, trust_torchscript) -> dict[str, LoadedModel]:
    """The original, unlearned and (optional) retrained models; the same file twice is refused
    where it would make the audit meaningless (unlearned and retrained)."""
    names = ("original", "unlearned", "retrained")
    models = {
        name: load_model(
            path,
            arch=arch,
            num_classes=num_classes,
            input_shape=input_shape,
            device=device,
            trust_torchscript=trust_torchscript,
        )
        for name, path in zip(names, paths, strict=True)
        if path is not None
    }
    if "retrained" in models and models["retrained"].sha256 == models["unlearned"].sha256:
        raise ConfigError(
            "`unlearned` and `retrained` are the same model file; the retrained model must be trained "
            "separately without the forget set",
            param=("unlearned", "retrained"),
        )
    for name, m in models.items():
        if m.num_classes is not None and m.num_classes < num_classes:
            raise ConfigError(
                f"the {name} model has {m.num_classes} classes but the data has labels up to "
                f"{num_classes - 1}"
            )
    return models


def _check_output_widths(models: dict[str, LoadedModel], roles: Roles, device: torch.device) -> None:
    """Every model must answer with the same number of logits (at least one per class)."""
    probe = roles.test.x[:2].to(device)
    widths = {}
    for name, m in models.items():
        try:
            with torch.no_grad():
                out = m.module(probe)
        except Exception as exc:  # a shape error is the model's, not ours: one line
            first = " ".join(str(exc).split())[:200]
            raise ModelError(
                f"{name} model {m.path} does not accept inputs of shape {tuple(probe.shape[1:])} "
                f"({type(exc).__name__}: {first})"
            ) from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ModelError(f"{name} model {m.path} must return logits of shape (batch, classes)")
        widths[name] = int(out.shape[1])
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{name} {w}" for name, w in widths.items())
        raise ModelError(
            f"the models disagree on their number of outputs ({shown}); audit models of one task"
        )


def _reference_models(loaded: _Inputs, req: EvaluateRequest, device: torch.device) -> ReferenceSet | None:
    """Reference models trained without the forget set: ``--reference-models N`` trained here
    (from a verified cache unless ``--no-cache``), or those in ``--reference-dir``, or none."""
    if req.reference_models:
        from unlearn_audit.executor import make_executor

        with (
            req.progress_factory(f"training {req.reference_models} reference models") as progress,
            make_executor(req.executor, req.ray_address) as jobs,
        ):
            return train_reference_set(
                loaded.original, loaded.roles, count=req.reference_models, seed=req.seed, device=device,
                cache_dir=req.cache_dir, progress=progress, use_cache=not req.no_cache, executor=jobs,
                mixed_precision=req.mixed_precision,
            )  # fmt: skip
    if req.reference_dir:
        return load_reference_dir(
            req.reference_dir, loaded.original, device, trust_torchscript=req.trust_torchscript
        )
    return None


def _robustness_measure(roles: Roles, *, samples, eps, steps, seed, device, original=None):
    """Clean, PGD and fallback robust accuracy on a fixed subset of the test set (a transfer
    attack from ``original`` when given)."""
    from unlearn_audit.robustness import robustness_measure

    return robustness_measure(
        roles.test, family=roles.family, num_classes=roles.num_classes, samples=samples, eps=eps,
        steps=steps, seed=seed, device=device, original=original,
    )  # fmt: skip


def _write_reports(
    result: dict,
    *,
    json_out: str | Path | None,
    html_out: str | Path | None,
    junit_out: str | Path | None,
    pdf_out: str | Path | None = None,
) -> dict[str, str]:
    """Write the requested reports; returns format -> path written."""
    from unlearn_audit.report import write_html, write_json, write_junit

    written: dict[str, str] = {}
    if json_out:
        written["json"] = str(write_json(result, json_out))
    if html_out:
        written["html"] = str(write_html(result, html_out))
    if junit_out:
        written["junit"] = str(write_junit(result, junit_out))
    if pdf_out:
        from unlearn_audit.pdf import write_pdf

        written["pdf"] = str(write_pdf(result, pdf_out))
    return written
