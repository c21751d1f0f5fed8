"""Data-parallel training: real gloo processes started by torchrun on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import cli_env, compose_config
from nnlab.engine.rng import seed_everything
from nnlab.runs.build import build

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")

TESTS = Path(__file__).parents[1]  # tests/: ddp_worker.py, helpers.py
# A model whose step does not depend on the rank beyond its rows: no dropout, no batch norm.
MODEL = [
    "trainer.device=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=null",
    "trainer.deterministic=true",
    "trainer.summary=false",
    "callbacks.progress=null",
    "model.hidden_sizes=[32]",
    "model.dropout=0.0",
    "model.batch_norm=false",
    "optimizer=sgd",
    "optimizer.lr=0.1",
]
PER_RANK_BATCH = 16


def torchrun(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """torchrun with 2 processes; on a timeout the whole process group is killed (no orphan ranks)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**cli_env(cwd), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_two_ranks_end_identical_and_equal_one_process_over_the_same_global_batches(tmp_path: Path) -> None:
    overrides = [*MODEL, "trainer=ddp", f"data.batch_size={PER_RANK_BATCH}"]
    done = torchrun([str(TESTS / "ddp_worker.py"), str(tmp_path), str(tmp_path / "run"), *overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    # One process, global batches of 2 x 16 rows in the same order (the last incomplete one dropped).
    cfg = compose_config([*MODEL, f"data.batch_size={2 * PER_RANK_BATCH}", "data.drop_last=true"], tmp_path / "one")
    seed_everything(cfg.seed)
    parts = build(cfg)
    parts.trainer.fit(parts.task, parts.data)
    single = parts.model.state_dict()
    for k in single:
        assert torch.allclose(single[k], rank0[k], atol=1e-6), k
    assert not torch.equal(single[next(iter(single))], build(cfg).model.state_dict()[next(iter(single))])  # it trained


@pytest.mark.slow
def test_a_language_model_trains_data_parallel_with_identical_ranks(tmp_path: Path) -> None:
    """task=language_model declares DDP: a GPT's ranks end with the same weights, with the n-gram
    baseline and the epoch's sample run on every rank and no collective out of step."""
    overrides = [
        *(m for m in MODEL if not m.startswith(("model.", "optimizer"))),
        "trainer=ddp",
        "trainer.limit_train_batches=4",
        "data=python_docs",
        "data.dataset.block_size=16",
        f"data.batch_size={PER_RANK_BATCH}",
        "task=language_model",
        "task.sample_tokens=5",
        "task.baseline_max_order=2",
        "model=gpt",
        "model.d_model=16",
        "model.num_heads=2",
        "model.num_layers=1",
        "model.dropout=0.0",
    ]
    done = torchrun([str(TESTS / "ddp_worker.py"), str(tmp_path), str(tmp_path / "run"), *overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_the_cli_writes_one_run_folder_from_rank_zero(tmp_path: Path) -> None:
    done = torchrun(["-m", "nnlab.commands.train", *MODEL, "trainer=ddp"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1  # one folder per run, not per rank
    run = runs[0]
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's only
    output = done.stdout + done.stderr
    assert output.count("final metrics") == 1  # one console report
    assert "DistributedDataParallel: rank 0 of 2" in output


def test_a_dead_rank_ends_the_job_with_an_error_instead_of_a_hang(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "nnlab.commands.train", *MODEL, "trainer=ddp", "trainer.max_epochs=100000", "trainer.ddp_timeout_s=30",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=tmp_path, env={**cli_env(tmp_path), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        log = tmp_path / "run" / "train.log"
        while not (log.exists() and "epoch 1/100000" in log.read_text()):  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 2
        subprocess.run(["kill", "-9", workers[-1]], check=True)
        killed = time.monotonic()
        proc.wait(timeout=120)
        assert proc.returncode != 0
        assert time.monotonic() - killed < 120
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def task_classes() -> list[type]:
    """Every task in nnlab.tasks: the classes that define `training_step`."""
    import importlib
    import inspect
    import pkgutil

    import nnlab.tasks

    found = []
    for info in pkgutil.iter_modules(nnlab.tasks.__path__):
        module = importlib.import_module(f"nnlab.tasks.{info.name}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    return sorted((c for c in found if hasattr(c, "training_step")), key=lambda c: c.__name__)


def test_every_task_declares_what_it_supports() -> None:
    """The engine and the commands read these declarations (nnlab.engine.task.Task), never a type."""
    classes = task_classes()
    assert {c.__name__ for c in classes} >= {"Supervised", "Reconstruction", "Adversarial", "SOMRule", "PerceptronRule"}
    for cls in classes:
        assert isinstance(cls.__dict__.get("supports_ddp"), bool), cls
        assert isinstance(cls.__dict__.get("supports_backbone_lr_scale"), bool), cls
        assert isinstance(cls.__dict__.get("own_optimizer_parts"), tuple), cls
        assert callable(cls.__dict__.get("single_optimizer")), cls


def test_ddp_is_refused_for_tasks_that_do_not_declare_it() -> None:
    from nnlab.engine.distributed import check_ddp_task
    from nnlab.errors import ConfigValueError

    for cls in task_classes():
        task = object.__new__(cls)  # the declaration is all the check reads
        if cls.supports_ddp:
            check_ddp_task(task)
        else:
            with pytest.raises(ConfigValueError, match=f"trainer.strategy=ddp supports .*, not {cls.__name__}"):
                check_ddp_task(task)
    assert {c.__name__ for c in task_classes() if c.supports_ddp} == {"Supervised", "Reconstruction", "LanguageModel"}
    with pytest.raises(ConfigValueError, match="not object"):  # a task that declares nothing
        check_ddp_task(object())


def test_accumulation_all_reduces_once_per_update_not_once_per_batch(tmp_path: Path) -> None:
    """`distributed.gradient_sync`: in a window of k batches only the update batch's backward
    communicates (DDP's comm hook counts the all-reduces), and the averaged gradient is the
    window's sum, as without skipping."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nnlab.engine import distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(4, 2))
        calls = []

        def hook(state, bucket):  # (DDP checks the annotations at run time: none under postponed evaluation)
            calls.append(bucket.index())
            future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        model.register_comm_hook(None, hook)
        xs = torch.randn(3, 8, 4)
        for i, x in enumerate(xs):
            with distributed.gradient_sync(model, update=i == len(xs) - 1):
                model(x).sum().backward()
            assert len(calls) == (1 if i == len(xs) - 1 else 0)
        summed = torch.nn.Linear(4, 2)
        summed.load_state_dict(model.module.state_dict())
        for x in xs:
            summed(x).sum().backward()
        assert torch.allclose(model.module.weight.grad, summed.weight.grad)
    finally:
        dist.destroy_process_group()


def test_gradient_sync_is_a_no_op_for_a_plain_module() -> None:
    import contextlib

    from nnlab.engine import distributed

    assert isinstance(distributed.gradient_sync(torch.nn.Linear(2, 2), update=False), contextlib.nullcontext)
