"""The bad-input battery (issue 9): wrong input to nnlab's commands, typed as a user types it.

Every case goes through the real command (`python -m nnlab.<cmd>`), in a working folder that
already holds an earlier successful run (`earlier/`, a copy of the `cli_run` fixture) and the
case's own input files. Each must end the way a user's mistake ends in nnlab:

  - exit status 2 (a diverged run too: `TrainingDiverged` is a user error), no traceback;
  - one line `Error: ...` on stderr, naming the offending key, value or file, with the fix;
  - no file that was on disk before changes or vanishes. Train commands run in the earlier
    run's folder (`hydra.run.dir=earlier`: "retry in the same folder"), where only Hydra's
    append-only train.log may grow; new files may appear only in the failed command's own new
    folder under outputs/ (eval and predict write there by default);
  - a malicious pickle (checkpoint or .npy) never runs: its marker file never appears.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import TINY, run_command

# What the malicious inputs would create when unpickled (relative to the working folder).
MARKER = "pwned"
# Any URL fetched while these are set goes to a closed local port: refused at once, so a
# download attempt fails fast instead of waiting on a network that is not there.
OFFLINE = {
    **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    "no_proxy": "",
    "NO_PROXY": "",
}
# "One short paragraph": about five lines of a wide terminal.
MAX_MESSAGE = 800


class UnclearMessage(AssertionError):
    """The message is not one short `Error:` line that names the key and says how to fix it."""


class EarlierFilesChanged(AssertionError):
    """A file that was on disk before the failed command changed, vanished or got company."""


# --- the cases' input files (each written under the working folder before the snapshot) ---------


def good_rows(header: str = "a,b,y") -> str:
    return header + "\n" + "".join(f"{i},{i * 3 % 7},{i % 2}\n" for i in range(40))


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def write_bytes(name: str, data: Callable[[Path], bytes]) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data(root))


class Payload:
    """Unpickling this creates the marker file: a stand-in for code run by a crafted file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_checkpoint(root: Path) -> None:
    """A torch.save zip file, shaped like an nnlab checkpoint, whose pickle opens the marker
    file for writing. Checked to be live: a plain torch.load does create the marker."""
    path = root / "evil.ckpt"
    torch.save({"model": Payload(root / MARKER), "config": "seed: 0\n", "epoch": 1}, path)
    torch.load(path, weights_only=False)["model"].close()
    assert (root / MARKER).is_file(), "the payload is not live: the case would prove nothing"
    (root / MARKER).unlink()


def malicious_npy(root: Path) -> None:
    """A .npy of Python objects (np.save pickles them) whose unpickling creates the marker."""
    path = root / "evil.npy"
    np.save(path, np.array([Payload(root / MARKER), 0.0], dtype=object), allow_pickle=True)
    np.load(path, allow_pickle=True)[0].close()
    assert (root / MARKER).is_file(), "the payload is not live: the case would prove nothing"
    (root / MARKER).unlink()


def truncated(root: Path) -> bytes:
    data = (root / "earlier" / "checkpoints" / "last.ckpt").read_bytes()
    return data[: len(data) // 2]


def diverged_run_kept_its_checkpoint(root: Path) -> None:
    """The diverged run (its own folder under outputs/runs/) keeps epoch 1's finite checkpoint."""
    (ckpt,) = root.glob("outputs/runs/*/checkpoints/last.ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (ckpt.parent.parent / "metrics.json").exists()


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    command: str  # train, eval or predict
    args: tuple[str, ...]  # as typed, in the working folder (train: TINY comes first)
    names: tuple[str, ...]  # what the message must name: the key, value or file (all of them)
    fix: str  # a phrase of the fix the message must give
    files: tuple[Callable[[Path], None], ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    run_dir: str | None = "earlier"  # train's hydra.run.dir; None: the default, a new folder under outputs/
    after: Callable[[Path], None] | None = None  # more checks on the working folder


def case(
    id: str,
    args: str,
    names: str | tuple[str, ...],
    fix: str,
    *,
    command: str = "train",
    slow: bool = False,
    **more: Any,
) -> Any:  # a pytest.param
    """One row of the table."""
    marks = [pytest.mark.slow] if slow else []
    names = (names,) if isinstance(names, str) else names
    return pytest.param(Case(command, tuple(args.split()), names, fix, **more), id=id, marks=marks)


CKPT = "ckpt_path=earlier/checkpoints/best.ckpt"
CASES = [
    # Unknown config choices: Hydra's composition, rewritten with the choices and a "did you mean".
    case("choice model=mpl", "model=mpl", "model=mpl", "Did you mean 'mlp'?"),
    case("choice data=digts", "data=digts", "data=digts", "Did you mean 'digits'?", slow=True),
    case("choice optimizer=adamm", "optimizer=adamm", "optimizer=adamm", "Choose one of: adagrad, adam,", slow=True),
    # Misspelled and unknown keys.
    case("key trainer.max_epoch", "trainer.max_epoch=5", "trainer.max_epoch", "Did you mean 'trainer.max_epochs'?"),
    case(
        "key model.hidden_size",
        "model.hidden_size=[8]",
        "model.hidden_size",
        "Did you mean 'model.hidden_sizes'?",
        slow=True,
    ),
    case("key +model.foo", "+model.foo=1", "model.foo", "Valid keys: ", slow=True),
    case(
        "key data.download (nested)",
        "data=mnist data.download=false",
        "data.download",
        "Did you mean 'data.dataset.download'?",
    ),
    # Wrong types and values out of range.
    case(
        "type trainer.max_epochs=abc",
        "trainer.max_epochs=abc",
        "trainer.max_epochs='abc'",
        "on the command line: trainer.max_epochs=30",
        slow=True,
    ),
    case("range trainer.max_epochs=-1", "trainer.max_epochs=-1", "trainer.max_epochs=-1", "must be >= 1", slow=True),
    case("range optimizer.lr=-0.1", "optimizer.lr=-0.1", "optimizer.lr=-0.1", "must be > 0", slow=True),
    case("range data.batch_size=0", "data.batch_size=0", "data.batch_size=0", "must be >= 1", slow=True),
    case("range model.dropout=1.5", "model.dropout=1.5", "model.dropout=1.5", "must be in [0.0, 1.0)", slow=True),
    case(
        "choice trainer.device=tpu", "trainer.device=tpu", "trainer.device='tpu'", "Choose one of: auto, cpu", slow=True
    ),
    case(
        "choice task.loss=crossentropy",
        "task.loss=crossentropy",
        "task.loss",
        "Did you mean 'cross_entropy'?",
        slow=True,
    ),
    case("range seed=-1", "seed=-1", "seed=-1", "must be in [0, 4294967295]", slow=True),
    case("range gradient_clip_val=-1", "trainer.gradient_clip_val=-1", "trainer.gradient_clip_val", "> 0", slow=True),
    # A model that cannot take the data.
    case("pair model=cnn data=iris", "model=cnn data=iris", ("model=cnn", "data=iris"), "Use model=mlp", slow=True),
    case("pair model=lstm data=iris", "model=lstm data=iris", ("model=lstm", "data=iris"), "Use model=mlp", slow=True),
    # Checkpoints to continue from.
    case("ckpt missing", "ckpt_path=gone.ckpt", "ckpt_path=gone.ckpt", "Point it at a checkpoint", slow=True),
    case(
        "ckpt truncated",
        "ckpt_path=half.ckpt",
        "half.ckpt",
        "start the run afresh (without ckpt_path)",
        files=(write_bytes("half.ckpt", truncated),),
        slow=True,
    ),
    case(
        "ckpt random bytes",
        "ckpt_path=noise.ckpt",
        "noise.ckpt",
        "start the run afresh (without ckpt_path)",
        files=(write_bytes("noise.ckpt", lambda root: np.random.default_rng(0).bytes(4096)),),
        slow=True,
    ),
    case(
        "ckpt of an MLP run for model=cnn",
        "model=cnn ckpt_path=earlier/checkpoints/last.ckpt",
        "earlier/checkpoints/last.ckpt",
        "resume with the config of the run that wrote it",
    ),
    case(
        "ckpt of an MLP run for other hidden sizes",
        "model.hidden_sizes=[8] ckpt_path=earlier/checkpoints/last.ckpt",
        "earlier/checkpoints/last.ckpt",
        "resume with the config of the run that wrote it",
        slow=True,
    ),
    case(
        "ckpt malicious pickle (train)",
        "ckpt_path=evil.ckpt",
        ("evil.ckpt", "Refused to load"),
        "A checkpoint written by nnlab-train never holds such references",
        files=(malicious_checkpoint,),
    ),
    case(
        "ckpt malicious pickle (eval)",
        "ckpt_path=evil.ckpt",
        ("evil.ckpt", "Refused to load"),
        "A checkpoint written by nnlab-train never holds such references",
        command="eval",
        files=(malicious_checkpoint,),
    ),
    # A dataset that is not on disk, offline.
    case(
        "mnist not downloaded, download=false",
        "data=mnist data.dataset.download=false",
        ("MNIST", "data.dataset.download=false"),
        "Set data.dataset.download=true",
    ),
    case(
        "mnist download, network unreachable",
        "data=mnist",
        ("MNIST", "could not be downloaded"),
        "put its files in",
        env=OFFLINE,
        slow=True,
    ),
    # Malformed CSV files for data=csv.
    case(
        "csv without the target column",
        "data=csv data.dataset.path=rows.csv data.dataset.target=y",
        ("rows.csv", "'y'", "data.dataset.target"),
        "Its columns: a, b, c",
        files=(write("rows.csv", good_rows("a,b,c")),),
    ),
    case(
        "csv text in a numeric column",
        "data=csv data.dataset.path=rows.csv data.dataset.target=y",
        ("rows.csv, line 7", "'b'", "'oops'"),
        "Fix the value",
        files=(write("rows.csv", good_rows().replace("\n5,1,1\n", "\n5,oops,1\n")),),
    ),
    case(
        "csv empty file",
        "data=csv data.dataset.path=rows.csv data.dataset.target=y",
        ("rows.csv", "is empty"),
        "needs a header line",
        files=(write("rows.csv", ""),),
        slow=True,
    ),
    case(
        "csv ragged rows",
        "data=csv data.dataset.path=rows.csv data.dataset.target=y",
        ("rows.csv, line 9", "4 fields"),
        "Quote a value that contains the delimiter",
        files=(write("rows.csv", good_rows().replace("\n7,0,1\n", "\n7,0,1,9\n")),),
        slow=True,
    ),
    case(
        "csv missing file",
        "data=csv data.dataset.path=nothere.csv data.dataset.target=y",
        ("data.dataset.path='nothere.csv'", "does not exist"),
        "Relative paths start in the directory",
        slow=True,
    ),
    # An output folder that cannot be made: root cannot be stopped by chmod, a file in the way can.
    case(
        "run dir under a regular file",
        "hydra.run.dir=blocker/run",
        "blocker/run",
        "hydra.run.dir",
        files=(write("blocker", "a file, not a folder\n"),),
        run_dir=None,
    ),
    # Training that diverges after epoch 1 was checkpointed (every epoch's, for this case): SGD
    # with lr 1e30 blows the weights up in its first update, so epoch 2's first forward pass overflows.
    case(
        "loss becomes non-finite",
        "optimizer=sgd optimizer.lr=1e30 model.batch_norm=false trainer.max_epochs=2 trainer.limit_train_batches=1 "
        "callbacks.model_checkpoint.save_interval_s=0",
        ("step 2 of epoch 2", "loss became non-finite", "checkpoints written before it are kept"),
        "trainer.gradient_clip_val=1.0",
        run_dir=None,
        after=diverged_run_kept_its_checkpoint,
    ),
    # nnlab-predict inputs: the earlier run is an MLP on digits, 64 features.
    case(
        "predict csv with 5 features",
        f"{CKPT} input=rows.csv",
        ("input=rows.csv", "5 features"),
        "Give 64 values per row",
        command="predict",
        files=(write("rows.csv", "1,2,3,4,5\n" * 3),),
    ),
    case(
        "predict npy with 5 features",
        f"{CKPT} input=rows.npy",
        ("input=rows.npy", "5 features"),
        "Give 64 values per row",
        command="predict",
        files=(lambda root: np.save(root / "rows.npy", np.zeros((3, 5), dtype=np.float32)),),
        slow=True,
    ),
    case(
        "predict npy of pickled objects",
        f"{CKPT} input=evil.npy",
        ("input=evil.npy", "allow_pickle=False"),
        "np.save(path, array)",
        command="predict",
        files=(malicious_npy,),
    ),
    case(
        "predict csv with ragged rows",
        f"{CKPT} input=rows.csv",
        ("input=rows.csv", "different numbers of values"),
        "values per row",
        command="predict",
        files=(write("rows.csv", "1,2,3\n4,5,6\n7,8,9,10\n"),),
        slow=True,
    ),
    # nnlab-eval.
    case("eval without ckpt_path", "", "ckpt_path is not set", "ckpt_path=outputs/runs/", command="eval", slow=True),
    case("eval split=tset", f"{CKPT} split=tset", "split='tset'", "Did you mean 'test'?", command="eval"),
    case(
        "eval on data of another shape",
        f"{CKPT} data=iris",
        ("earlier/checkpoints/best.ckpt", "nnlab.data.sklearn.iris"),
        "leave `data` unset",
        command="eval",
        slow=True,
    ),
]


# --- the test -----------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every file under root: its SHA-256, and for a log (append-only) its bytes too."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            log = data if p.suffix == ".log" else None
            files[p.relative_to(root).as_posix()] = (hashlib.sha256(data).hexdigest(), log)
    return files


def check_message(stderr: str, case: Case, root: Path) -> str:
    lines = stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("Error: "):
        raise UnclearMessage(f"stderr is not one 'Error: ' line:\n{stderr}")
    message = lines[0]
    for name in case.names:
        if name not in message:
            raise UnclearMessage(f"{name!r} is not named in: {message}")
    if case.fix not in message:
        raise UnclearMessage(f"the fix {case.fix!r} is not in: {message}")
    if re.search(r"[\x00-\x1f\x7f]", message):
        raise UnclearMessage(f"control characters (terminal escapes) in: {message!r}")
    # Measured as the user sees it, who typed paths relative to the working folder: the test's
    # long temporary path must not count.
    if len(message.replace(f"{root}/", "")) > MAX_MESSAGE:
        raise UnclearMessage(f"{len(message)} characters, not a short paragraph: {message}")
    return message


def check_files(before: dict[str, tuple[str, bytes | None]], after: dict[str, tuple[str, bytes | None]]) -> None:
    """Every earlier file is still there with its bytes (a log may only grow); new files only in
    the failed command's own new folder under outputs/."""
    problems = []
    for name, (digest, data) in before.items():
        if name not in after:
            problems.append(f"{name} vanished")
        elif after[name][0] != digest and not (data is not None and after[name][1].startswith(data)):
            problems.append(f"{name} changed")
    problems += [f"{name} is new" for name in after.keys() - before.keys() if not name.startswith("outputs/")]
    if problems:
        raise EarlierFilesChanged("; ".join(sorted(problems)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, cli_run: Path, tmp_path: Path) -> None:
    root = tmp_path
    shutil.copytree(cli_run, root / "earlier")
    for make in case.files:
        make(root)
    before = snapshot(root)
    assert "earlier/checkpoints/last.ckpt" in before and "earlier/.hydra/config.yaml" in before
    args = list(case.args)
    if case.command == "train":
        args = [*TINY, *args] + ([f"hydra.run.dir={case.run_dir}"] if case.run_dir else [])

    result = run_command(case.command, args, root, timeout=120, env=case.env)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not (root / MARKER).exists(), "a malicious pickle ran"
    check_message(result.stderr, case, root)
    check_files(before, snapshot(root))
    if case.after is not None:
        case.after(root)
