"""The trust boundary, tried as an attacker would: checkpoints whose stored config or pickle
carries a payload that creates a marker file if anything runs it.

Every shape is refused by the gate in-process (`nnlab.checks.untrusted`, `load_checkpoint`), and by a
real command in a subprocess: exit 2, one paragraph on stderr, no traceback, no marker. The
default suite sends each shape through one command (the commands taking turns); `-m slow` sends
every shape through every command that reads a checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from helpers import run_command, train_tiny
from nnlab.checks.untrusted import UntrustedConfigError, buildable, catalogue_targets, read_yaml, stored_run_config
from nnlab.engine.checkpoint import RefusedCheckpoint, UnreadableCheckpoint, load_checkpoint
from nnlab.runs.restore import load_run

# --- payloads in the stored config: each edits the config (plain dict) of a real checkpoint ---------


def _open_node(marker: str) -> dict[str, Any]:
    return {"_target_": "builtins.open", "file": marker, "mode": "w"}


def _flow(node: dict[str, Any]) -> str:
    """`node` as YAML flow text, as it would sit inside an ${oc.create:...} resolver call."""
    return yaml.safe_dump(node, default_flow_style=True).strip()


def c_foreign_target(cfg: dict, m: str) -> None:
    cfg["model"] = {"_target_": "os.system", "command": f"touch {m}"}


def c_foreign_target_nested(cfg: dict, m: str) -> None:
    cfg["task"]["loss_options"] = {"deeper": {"_target_": "subprocess.run", "args": ["touch", m]}}


def c_resolver_in_existing_value(cfg: dict, m: str) -> None:
    # Builds a node (with a _target_) only when instantiate resolves the config.
    cfg["model"]["hidden_sizes"] = "${oc.create:[" + _flow(_open_node(m)) + "]}"


def c_resolver_in_list_item(cfg: dict, m: str) -> None:
    cfg["model"]["hidden_sizes"] = [16, "${oc.create:" + _flow(_open_node(m)) + "}"]


def c_resolver_in_a_key(cfg: dict, m: str) -> None:
    cfg["model"]["${oc.create:" + _flow(_open_node(m)) + "}"] = 1


def c_interpolated_target_string(cfg: dict, m: str) -> None:
    cfg["model"] = {"_target_": "${oc.decode:'builtins.open'}", "file": m, "mode": "w"}


def c_target_from_environment(cfg: dict, m: str) -> None:
    cfg["model"] = {"_target_": "${oc.env:NNLAB_NOT_SET,builtins.open}", "file": m, "mode": "w"}


def c_plain_interpolation(cfg: dict, m: str) -> None:
    cfg["optimizer"]["lr"] = "${oc.env:HOME}"  # reads the environment: no ${ is built from a stored config


def c_target_in_list(cfg: dict, m: str) -> None:
    cfg["model"]["hidden_sizes"] = [_open_node(m)]


def c_target_in_args(cfg: dict, m: str) -> None:
    cfg["model"]["_args_"] = [_open_node(m)]


def c_partial(cfg: dict, m: str) -> None:
    cfg["optimizer"] = {"_target_": "builtins.exec", "_partial_": True, "_args_": [f"open({m!r}, 'w').close()"]}


def c_target_not_a_string(cfg: dict, m: str) -> None:
    cfg["model"]["_target_"] = _open_node(m)


CONFIG_PAYLOADS: dict[str, Callable[[dict, str], None]] = {
    f.__name__.removeprefix("c_"): f
    for f in (
        c_foreign_target,
        c_foreign_target_nested,
        c_resolver_in_existing_value,
        c_resolver_in_list_item,
        c_resolver_in_a_key,
        c_interpolated_target_string,
        c_target_from_environment,
        c_plain_interpolation,
        c_target_in_list,
        c_target_in_args,
        c_partial,
        c_target_not_a_string,
    )
}

# Payloads in the config's YAML text itself.
TEXT_PAYLOADS: dict[str, Callable[[str, str], str]] = {
    "yaml_python_tag": lambda text, m: f"evil: !!python/object/apply:os.system ['touch {m}']\n" + text,
    "yaml_custom_tag": lambda text, m: text.replace("model:\n", "model: !nnlab_evil\n", 1),
    "yaml_alias_bomb": lambda text, m: "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a]\n" + text,
}


# --- payloads in the pickle: a checkpoint whose unpickling would call something ----------------


class Call:
    """Pickles as a call of `func(*args)`: what a crafted checkpoint holds."""

    def __init__(self, func: Callable, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _pickled(state: dict, call: Call, folder: Path, **save: Any) -> Path:
    path = folder / "evil.ckpt"
    torch.save({**state, "extra": call}, path, **save)
    return path


def _with_data_pkl(state: dict, folder: Path, data: bytes) -> Path:
    """A torch zip checkpoint whose data.pkl is replaced by `data` (hand-written opcodes)."""
    good = io.BytesIO()
    torch.save(state, good)
    path = folder / "evil.ckpt"
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith("/data.pkl") else src.read(info))
    return path


def p_posix_system(state: dict, m: Path, folder: Path) -> Path:
    return _pickled(state, Call(os.system, f"touch {m}"), folder)  # pickles as posix.system


def p_os_system(state: dict, m: Path, folder: Path) -> Path:
    command = f"touch {m}".encode()
    data = b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."
    return _with_data_pkl(state, folder, data)


def p_builtins_exec(state: dict, m: Path, folder: Path) -> Path:
    return _pickled(state, Call(exec, f"open({str(m)!r}, 'w').close()"), folder)


def p_open(state: dict, m: Path, folder: Path) -> Path:
    return _pickled(state, Call(open, str(m), "w"), folder)


def p_stack_global(state: dict, m: Path, folder: Path) -> Path:
    return _pickled(state, Call(subprocess.call, ["touch", str(m)]), folder, pickle_protocol=4)


def p_legacy_format(state: dict, m: Path, folder: Path) -> Path:
    return _pickled(state, Call(os.system, f"touch {m}"), folder, _use_new_zipfile_serialization=False)


PICKLE_PAYLOADS: dict[str, Callable[[dict, Path, Path], Path]] = {
    f.__name__.removeprefix("p_"): f
    for f in (p_posix_system, p_os_system, p_builtins_exec, p_open, p_stack_global, p_legacy_format)
}

ALL_SHAPES = [*CONFIG_PAYLOADS, *TEXT_PAYLOADS, *PICKLE_PAYLOADS]
COMMANDS = ("eval", "predict", "explain", "attack", "export")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The state of a real checkpoint of a tiny run (digits, MLP)."""
    run = train_tiny([], tmp_path_factory.mktemp("run"))
    return load_checkpoint(run.dir / "checkpoints" / "last.ckpt")


def crafted(shape: str, state: dict, marker: Path, folder: Path) -> Path:
    """A checkpoint carrying payload `shape`, written into `folder`."""
    if shape in PICKLE_PAYLOADS:
        return PICKLE_PAYLOADS[shape](state, marker, folder)
    state = dict(state)
    if shape in CONFIG_PAYLOADS:
        cfg = OmegaConf.to_container(OmegaConf.create(state["config"]), resolve=False)
        CONFIG_PAYLOADS[shape](cfg, str(marker))
        state["config"] = yaml.safe_dump(cfg, sort_keys=False)
    else:
        state["config"] = TEXT_PAYLOADS[shape](state["config"], str(marker))
    path = folder / "evil.ckpt"
    torch.save(state, path)
    return path


# --- in-process: the gate itself ----------------------------------------------------------------


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_every_payload_is_refused_by_the_gate_and_runs_nothing(shape: str, tiny: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = crafted(shape, tiny, marker, tmp_path)
    refused = RefusedCheckpoint if shape in PICKLE_PAYLOADS else UntrustedConfigError
    with pytest.raises(refused) as caught:
        load_run(path, device="cpu")
    message = str(caught.value)
    assert str(path) in message
    assert "weights_only=False" not in message and "Traceback" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "shape, named",
    [
        ("posix_system", "posix.system"),
        ("os_system", "os.system"),
        ("builtins_exec", "builtins.exec"),
        ("open", "io.open"),
        ("stack_global", "subprocess.call"),
        ("legacy_format", "posix.system"),
    ],
)
def test_a_pickled_call_is_named_and_no_unsafe_advice_is_given(
    shape: str, named: str, tiny: dict, tmp_path: Path
) -> None:
    path = crafted(shape, tiny, tmp_path / "pwned", tmp_path)
    with pytest.raises(RefusedCheckpoint) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert f"refers to code ({named}" in message
    assert "weights_only" not in message and "truncated" not in message
    assert not (tmp_path / "pwned").exists()


def test_the_refusal_does_not_depend_on_the_wording_of_torchs_error(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = crafted("posix_system", tiny, tmp_path / "pwned", tmp_path)
    real_load = torch.load

    def reworded(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_load(*args, **kwargs)
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError("something else entirely") from None

    monkeypatch.setattr(torch, "load", reworded)
    with pytest.raises(RefusedCheckpoint, match=r"refers to code \(posix\.system\)"):
        load_checkpoint(path)


def test_a_damaged_checkpoint_is_unreadable_not_refused_and_points_elsewhere(tiny: dict, tmp_path: Path) -> None:
    (tmp_path / "best.ckpt").write_bytes(b"")
    good = io.BytesIO()
    torch.save(tiny, good)
    path = tmp_path / "last.ckpt"
    path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(UnreadableCheckpoint) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "truncated" in message and "best.ckpt" in message
    assert "e.g. the run's checkpoints/last.ckpt" not in message and "weights_only" not in message


def test_a_real_checkpoint_passes_the_gate_unchanged(tiny: dict, tmp_path: Path) -> None:
    cfg = stored_run_config(tiny, tmp_path / "x.ckpt")
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(OmegaConf.create(tiny["config"]))
    assert cfg.model._target_ == "nnlab.models.mlp.MLP"


def test_trust_config_builds_a_foreign_target_and_says_so(
    tiny: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = OmegaConf.to_container(OmegaConf.create(tiny["config"]))
    cfg["model"]["_target_"] = "tests_own.Model"
    with caplog.at_level("WARNING"):
        built = buildable(cfg, tmp_path / "mine.ckpt", trust=True)
    assert built.model._target_ == "tests_own.Model"
    assert "trust_config=true" in caplog.text and "without checking" in caplog.text


def test_the_catalogue_reads_targets_in_flow_style_and_lists_too() -> None:
    targets = catalogue_targets()
    assert {"nnlab.models.mlp.MLP", "torch.optim.Adam", "nnlab.engine.callbacks.ModelCheckpoint"} <= targets
    assert not {t for t in targets if t.split(".")[0] in {"os", "posix", "subprocess", "builtins", "io"}}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a: !!python/name:os.system ''", "YAML tag"),
        ("a: &x 1\nb: *x", "anchors or aliases"),
        ("a: [1, 2", "not valid YAML"),
        ("a: 1\na: 2", "not valid YAML"),
        ('a: "\\e]0;owned\\a"', None),  # YAML's escapes for ESC and BEL
    ],
)
def test_read_yaml_takes_plain_values_only(text: str, fragment: str | None) -> None:
    if fragment is None:
        assert read_yaml(text, "f.yaml") == {"a": "\x1b]0;owned\x07"}  # a plain string (printed via printable)
        return
    with pytest.raises(UntrustedConfigError, match=fragment):
        read_yaml(text, "f.yaml")


# --- subprocess: the real commands -----------------------------------------------------------------


def command_args(command: str, path: Path, folder: Path) -> list[str]:
    args = [f"ckpt_path={path}", f"hydra.run.dir={folder / ('out_' + command)}", "device=cpu"]
    if command == "predict":
        rows = folder / "rows.csv"
        rows.write_text(",".join(["0"] * 64) + "\n")
        args.append(f"input={rows}")
    if command == "export":
        args = [a for a in args if not a.startswith("device=")]
    return args


def assert_refused(result: subprocess.CompletedProcess[str], marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert result.returncode == 2, result.stdout + result.stderr
    paragraph = result.stderr.strip()
    assert paragraph.startswith("Error: ") and "\n" not in paragraph, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "weights_only=False" not in paragraph


# The default suite sends each command one payload and each family (config, YAML text, pickle) at
# least once through a real command; every payload reaches the gate in-process above, and every
# command meets every payload in the slow battery below (a command costs ~2 s of imports).
IN_DEFAULT_SUITE = {*ALL_SHAPES[: len(COMMANDS)], next(iter(TEXT_PAYLOADS)), next(iter(PICKLE_PAYLOADS))}


@pytest.mark.parametrize(
    "shape", [pytest.param(s, marks=() if s in IN_DEFAULT_SUITE else pytest.mark.slow) for s in ALL_SHAPES]
)
def test_a_command_refuses_each_payload(shape: str, tiny: dict, tmp_path: Path) -> None:
    command = COMMANDS[ALL_SHAPES.index(shape) % len(COMMANDS)]  # the commands take turns
    marker = tmp_path / "pwned"
    path = crafted(shape, tiny, marker, tmp_path)
    assert_refused(run_command(command, command_args(command, path, tmp_path), tmp_path), marker)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_every_command_refuses_every_payload(command: str, shape: str, tiny: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = crafted(shape, tiny, marker, tmp_path)
    assert_refused(run_command(command, command_args(command, path, tmp_path), tmp_path), marker)


@pytest.mark.parametrize(
    "how, shape", [("ckpt_path", "posix_system"), ("resume_auto", "stack_global"), ("init_from", "builtins_exec")]
)
def test_training_refuses_a_pickled_call_however_the_checkpoint_is_named(
    how: str, shape: str, tiny: dict, tmp_path: Path
) -> None:
    """nnlab-train reads checkpoints three ways: ckpt_path=, last.ckpt with trainer.resume=auto,
    and transfer.init_from= (nnlab-lr-find too); only their tensors are used, through the same
    loader."""
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    path = crafted(shape, tiny, marker, folder)
    args = ["trainer.max_epochs=1", "callbacks.progress=null", f"hydra.run.dir={run_dir}"]
    if how == "ckpt_path":
        args.append(f"ckpt_path={path}")
    elif how == "resume_auto":
        path.rename(folder / "last.ckpt")
        args.append("trainer.resume=auto")
    else:
        args[-1] = f"hydra.run.dir={tmp_path / 'other'}"
        args.append(f"+transfer.init_from={path}")
    result = run_command("train", args, tmp_path)
    assert_refused(result, marker)
    assert "refers to code" in result.stderr


def test_an_ensemble_resumed_in_a_folder_holding_a_doctored_member_never_builds_its_config(
    tiny: dict, tmp_path: Path
) -> None:
    """nnlab-ensemble with trainer.resume=auto picks up the checkpoints already in its folder:
    their tensors, never their stored configs (each member is built from the command's own)."""
    marker = tmp_path / "pwned"
    root = tmp_path / "ens"
    folder = root / "member_0" / "checkpoints"
    folder.mkdir(parents=True)
    path = crafted("resolver_in_existing_value", tiny, marker, folder)
    for name in ("last.ckpt", "best.ckpt"):
        (folder / name).write_bytes(path.read_bytes())
    path.unlink()
    args = [
        "ensemble.members=2",
        "ensemble.combine=[mean]",
        "trainer.max_epochs=1",
        "trainer.resume=auto",
        "callbacks.progress=null",
        f"hydra.run.dir={root}",
    ]
    result = run_command("ensemble", args, tmp_path)
    assert not marker.exists()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# --- nnlab-report: a sweep folder from elsewhere ---------------------------------------------------


def fake_sweep(folder: Path, overrides: str, status: dict | None = None, config: str | None = None) -> Path:
    """A sweep folder of two trials as nnlab-train writes them; trial 1's files are given."""
    sweep = folder / "sweep"
    for num, lr in ((0, 0.1), (1, 0.01)):
        trial = sweep / str(num)
        (trial / ".hydra").mkdir(parents=True)
        (trial / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n" if num == 0 else overrides)
        (trial / ".hydra" / "config.yaml").write_text(
            "optimized_metric: val/loss\n" if num == 0 or config is None else config
        )
        (trial / "metrics.json").write_text(json.dumps({"val/loss": 1.0 - lr, "test/acc": lr}))
        (trial / "status.json").write_text(json.dumps(status if num == 1 and status else {"status": "completed"}))
    return sweep


def report_of(sweep: Path) -> subprocess.CompletedProcess[str]:
    return run_command("report", [str(sweep)], sweep.parent)


@pytest.mark.parametrize(
    "overrides, config, fragment",
    [
        ("- optimizer.lr=[0.01\n  - x: [", None, "overrides.yaml is not valid YAML"),
        ("- !!python/object/apply:os.system ['touch {m}']\n", None, "overrides.yaml holds the YAML tag"),
        ("optimizer.lr: 0.01\n", None, "overrides.yaml is not a list of overrides"),
        ("- optimizer.lr=0.01\n", "report: !!python/object/apply:os.system ['touch {m}']\n", "config.yaml holds the"),
    ],
)
def test_report_refuses_damaged_or_tagged_trial_files_in_one_paragraph(
    overrides: str, config: str | None, fragment: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    sweep = fake_sweep(tmp_path, overrides.format(m=marker), config=config and config.format(m=marker))
    result = report_of(sweep)
    assert not marker.exists()
    assert result.returncode == 2, result.stdout + result.stderr
    paragraph = result.stderr.strip()
    assert paragraph.startswith("Error: ") and "\n" not in paragraph and "Traceback" not in paragraph
    assert fragment in paragraph and str(sweep / "1" / ".hydra") in paragraph


def test_report_shows_escape_sequences_and_interpolations_as_text(tmp_path: Path) -> None:
    error = "bad lr\x1b]0;owned\x07\x1b[2J\x1b[31m[bold]markup[/bold]"
    sweep = fake_sweep(tmp_path, "- optimizer.lr=${oc.env:HOME}\n", status={"status": "failed", "error": error})
    result = report_of(sweep)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\x07" not in out  # nothing reaches the terminal raw
    assert "\\x1b]0;owned" in out and "[bold]markup" in out  # shown, escaped; not read as rich markup
    assert "${oc.env:HOME}" in out and os.environ.get("HOME", "/root") + "\n" not in out
    assert "\x1b" not in (sweep / "report.md").read_text()


def test_report_refuses_a_metric_that_is_not_a_number(tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path, "- optimizer.lr=0.01\n")
    (sweep / "1" / "metrics.json").write_text(json.dumps({"val/loss": {"_target_": "os.system"}}))
    result = report_of(sweep)
    assert result.returncode == 2 and "metrics.json holds a metric that is not a number" in result.stderr
    assert "Traceback" not in result.stderr
