"""The Ray executor gives the in-process executor's results: reference models, benchmark, study.

One local Ray instance with 2 CPUs serves the whole module (starting it costs seconds). Every
comparison is exact: the jobs seed themselves, so running them as Ray tasks in other processes
must not move a single parameter or number; only timings, file hashes (checkpoints embed their
training time) and the output folder may differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_golden import normalise

from unlearn_audit.errors import ConfigError
from unlearn_audit.executor import InProcess, RayExecutor, make_executor, task_resources

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    # The workers import this module's job functions by name: put tests/ on their path too.
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()
    torch.set_num_threads(before)


def _normalise(value, folder: Path):
    """The golden tests' normalisation (timings, hashes, provenance dropped), ``folder`` -> ``<tmp>``."""
    return normalise(value, str(folder))


def _square(job: int, *, offset: int) -> int:
    return job * job + offset


def test_map_keeps_job_order_and_passes_shared_arguments():
    seen: list[tuple[int, int]] = []
    jobs = [3, 1, 2]
    got = RayExecutor().map(_square, jobs, shared={"offset": 10}, progress=lambda d, t: seen.append((d, t)))
    assert got == InProcess().map(_square, jobs, shared={"offset": 10}) == [19, 11, 14]
    assert seen[-1] == (3, 3)


def _fail(job: int) -> None:
    raise ConfigError(f"job {job} is bad", param="seeds")


def test_a_job_error_reaches_the_caller_as_itself():
    with pytest.raises(ConfigError, match="job 1 is bad"):
        RayExecutor().map(_fail, [1])


def test_tasks_ask_for_a_gpu_on_cuda_else_a_cpu():
    assert task_resources("cuda:1") == {"num_gpus": 1}
    assert task_resources(torch.device("cpu")) == {"num_cpus": 1}


def test_executor_names_and_addresses_are_checked():
    assert isinstance(make_executor("ray"), RayExecutor)
    with pytest.raises(ConfigError, match="one of inprocess, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="needs `executor` ray"):
        make_executor("inprocess", "ray://head:10001")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from unlearn_audit.api import train_checkpoint
    from unlearn_audit.data import load_dataset, make_roles
    from unlearn_audit.models import load_model

    path = tmp_path_factory.mktemp("orig") / "orig.pt"
    train_checkpoint(
        out=path, data="digits", arch="mlp", forget="random:100", overrides={"epochs": 2}, device="cpu"
    )
    roles = make_roles(load_dataset("digits"), "random:100", seed=0)
    return load_model(path, device="cpu"), roles


def _state(models) -> list[dict]:
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in models]


def test_reference_models_are_identical_and_share_the_cache(original, tmp_path):
    from unlearn_audit.models import fingerprint_module
    from unlearn_audit.reference_models import train_reference_set

    loaded, roles = original
    kw = dict(count=3, seed=0, device="cpu")
    here = train_reference_set(loaded, roles, use_cache=False, executor=InProcess(), **kw)
    on_ray = train_reference_set(loaded, roles, cache_dir=tmp_path, executor=RayExecutor(), **kw)
    assert [e["source"] for e in on_ray.listing] == ["trained"] * 3
    for a, b in zip(_state(here.models), _state(on_ray.models), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # What Ray cached is what the in-process run trains: it is reused, with the same weights.
    again = train_reference_set(loaded, roles, cache_dir=tmp_path, executor=InProcess(), **kw)
    assert [e["source"] for e in again.listing] == ["cache"] * 3
    assert [fingerprint_module(m) for m in again.models] == [e["sha256"] for e in here.listing]


def _bench(out: Path, executor):
    from unlearn_audit.bench import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig.make(quick=True, methods=("finetune",), seeds=2, epochs=2, device="cpu")
    result = run_benchmark(config, out, executor=executor)
    return json.loads((out / "benchmark.json").read_text(encoding="utf-8")), result


def test_benchmark_on_ray_equals_in_process_and_reuses_its_artifacts(tmp_path):
    here, here_result = _bench(tmp_path / "here", InProcess())
    on_ray, _ = _bench(tmp_path / "ray", RayExecutor())
    assert _normalise(on_ray, tmp_path / "ray") == _normalise(here, tmp_path / "here")
    for name in ("seed-0/audit-finetune.json", "seed-1/audit-retrain.json"):
        audits = [json.loads((tmp_path / d / name).read_text(encoding="utf-8")) for d in ("here", "ray")]
        assert _normalise(audits[1], tmp_path / "ray") == _normalise(audits[0], tmp_path / "here")
    # Resuming the in-process folder on Ray retrains nothing: every checkpoint keeps its hash.
    _, resumed = _bench(tmp_path / "here", RayExecutor())
    assert [r.sha256 for r in resumed.runs] == [r.sha256 for r in here_result.runs]


def test_robustness_study_on_ray_equals_in_process(tmp_path):
    from unlearn_audit.study import StudyConfig, run_study

    config = StudyConfig.make(
        quick=True, methods=("finetune",), epochs=1, robust_samples=40, attack_steps=3, device="cpu"
    )
    results = {}
    for name, executor in (("here", InProcess()), ("ray", RayExecutor())):
        run_study(config, tmp_path / name, executor=executor)
        data = json.loads((tmp_path / name / "robustness-study.json").read_text(encoding="utf-8"))
        results[name] = _normalise(data, tmp_path / name)
    assert results["ray"] == results["here"]
    assert {p["model"] for p in results["here"]["points"]} == {"st_model", "at_model"}


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--executor", "dask"], "--executor must be one of"),
        (["--ray-address", "auto"], "--ray-address needs"),
    ],
)
def test_bad_executor_options_are_one_line_exit_2(run_cli, tmp_path, options, fragment):
    code, _, err = run_cli(
        ["benchmark", "--quick", "--methods", "finetune", *options, "--out", tmp_path / "b"]
    )
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
