"""scripts/concept_pipelines.py: the concept lab's multi-command comparisons (adversarial,
transfer_learning, ensembles, edge_deployment, ssl_pretraining, attention, reinforcement_learning).

The tables are plain functions of the runs' metrics, checked here on made-up numbers; the
commands themselves are checked by running two whole pipelines on tiny runs (slow).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import CONFIG_DIR, TINY, cli_env, compose_config
from nnlab.runs.sweepfolder import Trial

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "concept_pipelines.py"


def load_script():
    if str(SCRIPT.parent) not in sys.path:  # it imports scripts/concepts.py, as `python scripts/...` would find it
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("concept_pipelines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


cp = load_script()


def trial(n: int, overrides: list[str], metrics: dict[str, float]) -> Trial:
    return Trial(name=str(n), dir=Path(str(n)), overrides=overrides, status="completed", metrics=metrics)


def test_every_pipeline_is_an_experiment_whose_header_names_its_commands() -> None:
    for name in cp.PIPELINES:
        header = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().split("\ndefaults:")[0]
        assert f"nnlab-train -m experiment={name}" in header
        assert f"python scripts/concept_pipelines.py {name}" in header


@pytest.mark.parametrize("name", ["transfer_learning", "ssl_pretraining"])
def test_the_few_label_sweeps_read_the_pretrained_checkpoint_from_the_command_line(name: str) -> None:
    """Hydra resolves the sweep's params against the composed config, so `pretrained_ckpt=<path>`
    on the command line becomes the fine-tuned trials' transfer.init_from."""
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml")
    cfg.pretrained_ckpt = "runs/pre/checkpoints/best.ckpt"
    params = cfg.hydra.sweeper.params
    assert params["transfer.init_from"] == "null,runs/pre/checkpoints/best.ckpt"
    assert params["data_edit.few_labels.per_class"] == "5,10,20"


def test_robustness_rows_put_every_model_and_method_beside_each_eps() -> None:
    attacks = {
        "adversarial=none": {
            "clean/acc": 0.98,
            "fgsm/eps_0/acc": 0.98,
            "pgd/eps_0/acc": 0.98,
            "fgsm/eps_0.1/acc": 0.6,
            "pgd/eps_0.1/acc": 0.5,
        },
        "adversarial=pgd": {
            "clean/acc": 0.97,
            "fgsm/eps_0/acc": 0.97,
            "pgd/eps_0/acc": 0.97,
            "fgsm/eps_0.1/acc": 0.9,
            "pgd/eps_0.1/acc": 0.85,
        },
    }
    rows = cp.robustness_rows(attacks)
    assert [r["eps"] for r in rows] == [0.0, 0.1]
    assert rows[1] == {
        "eps": 0.1,
        "adversarial=none: fgsm": 0.6,
        "adversarial=none: pgd": 0.5,
        "adversarial=pgd: fgsm": 0.9,
        "adversarial=pgd: pgd": 0.85,
    }


def test_few_label_rows_pair_scratch_and_fine_tuned_per_label_count() -> None:
    ckpt = "transfer.init_from=/x/pretrain/checkpoints/best.ckpt"
    trials = [
        trial(0, ["data_edit.few_labels.per_class=10", "transfer.init_from=null"], {"test/acc": 0.90}),
        trial(1, ["data_edit.few_labels.per_class=10", ckpt], {"test/acc": 0.93}),
        trial(2, ["data_edit.few_labels.per_class=5", "transfer.init_from=null"], {"test/acc": 0.80}),
        trial(3, ["data_edit.few_labels.per_class=5", ckpt], {"test/acc": 0.78}),
    ]
    rows = cp.few_label_rows(trials)
    assert [r["labels per class"] for r in rows] == [5, 10]  # sorted, whatever the trial order
    assert rows[0]["scratch"] == 0.80 and rows[0]["fine-tuned"] == 0.78
    assert rows[0]["gain (points)"] == pytest.approx(-2.0)
    assert rows[1]["gain (points)"] == pytest.approx(3.0)
    # A failed trial leaves its arm out and the gain unknown, not a made-up number.
    assert cp.few_label_rows(trials[:1])[0]["gain (points)"] is None


@pytest.mark.parametrize(
    ("overrides", "bootstrap"),
    [
        (["data_edit=[bootstrap]"], True),
        (["data_edit=[missing, bootstrap]"], True),
        (["data_edit=[]"], False),
        (["data_edit=[fixed_order]"], False),
        (["seed=1"], False),
    ],
)
def test_a_trial_is_a_bootstrap_member_when_its_row_edits_list_the_bootstrap(overrides, bootstrap: bool) -> None:
    assert cp.lists_bootstrap(trial(0, overrides, {})) is bootstrap


def test_ensemble_rows_set_the_single_models_beside_the_combinations() -> None:
    singles = [
        trial(i, [f"data_edit={edits}", f"seed={i % 2}"], {"test/acc": a})
        for i, (edits, a) in enumerate([("[]", 0.8), ("[]", 0.9), ("[bootstrap]", 0.7), ("[bootstrap]", 0.75)])
    ]
    seed = {
        "member_0/test/acc": 0.8,
        "member_1/test/acc": 0.9,
        "ensemble/mean/test/acc": 0.92,
        "ensemble/vote/test/acc": 0.91,
        "ensemble/stacking/test/acc": 0.93,
    }
    bootstrap = {"member_0/test/acc": 0.7, "member_1/test/acc": 0.76, "ensemble/mean/test/acc": 0.8}
    rows = cp.ensemble_rows(singles, {"seed": seed, "bootstrap": bootstrap})
    assert rows[0] == {
        "members vary by": "seed",
        "single models": "0.800 0.900",
        "single: mean": pytest.approx(0.85),
        "single: best": 0.9,
        "ensemble: mean": 0.92,
        "ensemble: vote": 0.91,
        "ensemble: stacking": 0.93,
        "same models": "yes",
    }
    assert rows[1]["single models"] == "0.700 0.750"
    assert "ensemble: vote" not in rows[1]  # only the combinations that ran
    assert rows[1]["same models"] == "no"  # member 1 (0.76) is not the sweep's seed-1 model (0.75)


def test_export_rows_give_size_latency_and_score_per_artifact() -> None:
    metrics = {
        "threads": 1.0,
        "onnx/test_acc": 0.98,
        "pytorch/size_kb": 207.7,
        "pytorch/latency_b1_ms": 0.11,
        "pytorch/test_acc": 0.98,
        "onnx/size_kb": 207.6,
        "onnx/latency_b1_ms": 0.01,
        "onnx/max_abs_diff": 4e-6,
        "onnx/classes_agree": 1.0,
    }
    rows = cp.export_rows({"mlp": metrics})
    assert [list(r) for r in rows] == [["model", "artifact", "size_kb", "latency_b1_ms", "test_acc"]] * 2
    assert rows == [
        {"model": "mlp", "artifact": "pytorch", "size_kb": 207.7, "latency_b1_ms": 0.11, "test_acc": 0.98},
        {"model": "mlp", "artifact": "onnx", "size_kb": 207.6, "latency_b1_ms": 0.01, "test_acc": 0.98},
    ]


def test_markdown_rounds_numbers_and_marks_missing_values() -> None:
    table = cp.markdown([{"eps": 0.1, "acc": 0.98412345}, {"eps": 0.2, "note": "x"}])
    assert table.splitlines() == [
        "| eps | acc | note |",
        "|---|---|---|",
        "| 0.1 | 0.9841 | - |",
        "| 0.2 | - | x |",
    ]


def test_line_plot_draws_every_column_against_x(tmp_path: Path) -> None:
    rows = [{"eps": 0.0, "a: pgd": 0.98, "b: pgd": 0.97}, {"eps": 0.1, "a: pgd": 0.5, "b: pgd": 0.86}]
    path = cp.line_plot(rows, "eps", "test accuracy", tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


@pytest.mark.parametrize("algorithm", ["reinforce", "dqn", "ppo"])
def test_each_reinforcement_learning_trial_is_its_cartpole_experiment_as_it_is(algorithm: str, tmp_path: Path) -> None:
    """The sweep picks a whole experiment file per trial (`experiment@_global_=cartpole_<algorithm>`):
    the trial runs exactly what `nnlab-train experiment=cartpole_<algorithm>` runs, seed included."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / "reinforcement_learning.yaml").hydra.sweeper.params
    assert params["experiment@_global_"].split(",") == ["cartpole_reinforce", "cartpole_dqn", "cartpole_ppo"]
    trial = compose_config(
        ["experiment=reinforcement_learning", f"experiment@_global_=cartpole_{algorithm}", "seed=2"], tmp_path
    )
    alone = compose_config([f"experiment=cartpole_{algorithm}", "seed=2"], tmp_path)
    ran, expected = (OmegaConf.to_container(c, resolve=True) for c in (trial, alone))
    for cfg in (ran, expected):
        cfg.pop("report")  # what nnlab-report shows of the sweep: the one key the concept adds
        cfg.pop("hydra", None)  # (its record of the choices names the concept)
    assert ran == expected
    assert ran["task"]["_target_"].rsplit(".", 1)[-1].lower() == algorithm and ran["seed"] == 2


def agent(algorithm: str, seed: int, val: list[float], test: float | None, wall: float | None = 10.0) -> cp.AgentRun:
    """A made-up trial of the reinforcement-learning sweep: a validation every 1,000 steps."""
    steps = [1000 * (i + 1) for i in range(len(val))]
    solved = test is not None and test >= 475
    return cp.AgentRun(algorithm, seed, (steps, val), (steps, val), test, solved, wall)


def test_steps_to_solve_are_those_of_the_first_validation_at_500() -> None:
    assert agent("ppo", 0, [120.0, 500.0, 480.0, 500.0], 500.0).steps_to_solve == 2000
    assert agent("ppo", 0, [120.0, 499.9], 480.0).steps_to_solve is None  # solved by the test, not at 500


def test_epoch_curves_are_drawn_against_the_environment_steps_of_their_epoch() -> None:
    env_steps = ([1, 2, 3], [5120.0, 10240.0, 15360.0])
    val = ([1, 3], [150.0, 500.0])  # (an epoch without a validation is left out)
    assert cp.against_env_steps(env_steps, val) == ([5120, 15360], [150.0, 500.0])


def test_solve_rows_summarise_each_algorithm_over_its_seeds() -> None:
    runs = [
        agent("reinforce", 0, [100.0, 300.0, 500.0], 499.0, wall=9.0),
        agent("reinforce", 1, [100.0, 500.0], 500.0, wall=12.0),
        agent("reinforce", 2, [100.0, 200.0, 300.0, 400.0, 500.0], 470.0, wall=20.0),
        agent("dqn", 0, [500.0], 500.0),
        agent("dqn", 1, [10.0], None, wall=None),  # a failed trial: counted, unsolved, no return
    ]
    rows = cp.solve_rows(runs)
    assert [r["algorithm"] for r in rows] == ["reinforce", "dqn"]  # the sweep's order
    assert rows[0] == {
        "algorithm": "reinforce",
        "seeds solved (test >= 475)": "2/3",  # the test decides; seed 2 reached 500 in validation only
        "env steps to solve: median": "3,000",
        "range": "2,000-5,000",
        "test return": "489.7 ± 17.0",  # sample standard deviation over the seeds
        "wall s per run: median": 12.0,
        "range (s)": "9-20",
    }
    assert rows[1]["seeds solved (test >= 475)"] == "1/2"
    assert rows[1]["range"] == "1,000-1,000" and rows[1]["test return"] == "500.0 ± 0.0"
    assert [r["env steps to solve"] for r in cp.run_rows(runs)] == ["3,000", "2,000", "5,000", "1,000", None]


def test_return_plot_draws_every_run_against_environment_steps(tmp_path: Path) -> None:
    runs = [agent(a, s, [100.0 * (s + 1), 500.0], 500.0) for a in ("reinforce", "dqn", "ppo") for s in (0, 1, 2)]
    path = cp.return_plot(runs, tmp_path / "returns.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_failing_command_stops_the_pipeline_with_its_log(tmp_path: Path) -> None:
    run = cp.Runner(tmp_path)
    with pytest.raises(cp.PipelineFailed, match=r"nnlab-report .* exited with 2(.|\n)*no such folder"):
        run("nnlab-report", str(tmp_path / "missing"))
    assert run.steps[0]["returncode"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["transfer_learning", "edge_deployment", "reinforcement_learning"])
def test_a_pipeline_runs_end_to_end_on_tiny_runs(name: str, tmp_path: Path) -> None:
    """The real commands on runs of two batches: a pretraining then a sweep from its checkpoint,
    a sweep then nnlab-export on each trial, or the 9 reinforcement-learning trials read back from
    their TensorBoard logs; the table, timing and report land in the docs dir."""
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    cmd = [sys.executable, str(SCRIPT), name, "--runs-dir", str(runs), "--docs-dir", str(docs), "--", *TINY]
    done = subprocess.run(cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = json.loads((docs / name / "table.json").read_text())
    timing = json.loads((docs / name / "timing.json").read_text())
    assert timing["returncode"] == 0 and timing["wall_s"] > 0
    assert [s["returncode"] for s in table["steps"]] == [0] * len(table["steps"])
    assert (docs / name / "report.md").is_file() and (docs / name / "table.md").is_file()
    if name == "transfer_learning":
        assert [r["labels per class"] for r in table["rows"]] == [5, 10, 20]
        assert all(0 <= r["scratch"] <= 1 and 0 <= r["fine-tuned"] <= 1 for r in table["rows"])
        out = next((runs / name).iterdir())
        assert "copied" in (out / "sweep" / "1" / "train.log").read_text()  # the fine-tuned trial loaded it
    elif name == "reinforcement_learning":
        assert [r["algorithm"] for r in table["rows"]] == ["reinforce", "dqn", "ppo"]
        assert all(r["seeds solved (test >= 475)"].endswith("/3") for r in table["rows"])
        assert (docs / name / "return_vs_env_steps.png").stat().st_size > 10_000
        assert len((docs / name / "runs.md").read_text().splitlines()) == 2 + 9  # header, rule, a row per trial
    else:
        assert {(r["model"], r["artifact"]) for r in table["rows"]} >= {("mlp", "onnx_int8"), ("cnn", "pytorch")}
        assert all(r["size_kb"] > 0 and 0 <= r["test_acc"] <= 1 for r in table["rows"])
