"""nnlab.analysis.ensembles (mean, vote, stacking on hand-made cases) and nnlab.commands.ensemble (the
`nnlab-ensemble` command: member folders, table, figure, metrics.json, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from helpers import CLI_TIMEOUT_S, TINY, cli_env, compose_config
from nnlab.analysis.ensembles import (
    classification_scores,
    combine_classification,
    combine_regression,
    majority_vote,
    mean_vote,
    side_by_side,
    vote_counts,
)
from nnlab.commands.ensemble import EnsemblePlan, ensemble, explain_override, member_config
from nnlab.data.edits import check_order
from nnlab.data.edits.bootstrap import Bootstrap
from nnlab.errors import ConfigValueError
from nnlab.runs.build import row_edits


def compose_ensemble(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """The config `nnlab-ensemble <overrides>` hands to `main`."""
    return compose_config(overrides, run_dir, config_name="ensemble")


# -- combining: hand-computed cases -------------------------------------------------------------
# 3 members, 3 rows, 3 classes.
PROBS = np.array(
    [
        [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
        [[0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]],
        [[0.5, 0.4, 0.1], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6]],
    ]
)


def test_mean_averages_the_probabilities_then_takes_the_argmax() -> None:
    # row 0: mean (0.4, 0.5, 0.1) -> 1, although 2 of 3 members say 0; row 1: (0.233, 0.467, 0.3) -> 1;
    # row 2: (0.267, 0.233, 0.5) -> 2.
    assert mean_vote(PROBS).tolist() == [1, 1, 2]


def test_vote_counts_the_members_argmax() -> None:
    assert vote_counts(PROBS).tolist() == [[2, 1, 0], [1, 2, 0], [1, 0, 2]]
    # row 0: 2 votes for class 0 beat the mean's choice of class 1.
    assert majority_vote(PROBS).tolist() == [0, 1, 2]


def test_a_tied_vote_goes_to_the_tied_class_with_the_highest_mean_probability() -> None:
    # 2 members disagree on every row: one vote each.
    probs = np.array(
        [
            [[0.9, 0.1, 0.0], [0.5, 0.0, 0.5], [0.4, 0.6, 0.0]],
            [[0.4, 0.6, 0.0], [0.0, 0.5, 0.5], [0.9, 0.1, 0.0]],
        ]
    )
    # row 0: classes 0 and 1 tie at 1 vote; mean probs 0.65 vs 0.35 -> 0.
    # row 1: member 0 says 0 (first max), member 1 says 1; class 2 has the highest mean probability
    #        (0.5) but no vote, so it cannot win; 0 and 1 tie at 0.25 -> the lowest index, 0.
    # row 2: classes 1 and 0 tie; mean probs 0.65 (class 0) vs 0.35 -> 0.
    assert vote_counts(probs).tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert majority_vote(probs).tolist() == [0, 0, 0]
    probs[1, 2] = [0.1, 0.9, 0.0]  # row 2 now: mean (0.25, 0.75) -> class 1 wins the tie
    assert majority_vote(probs).tolist() == [0, 0, 1]


def test_stacking_learns_to_trust_the_right_member() -> None:
    """Member 0 is right, member 1 always names the other class: averaging cancels them out to a
    coin flip, a vote ties, stacking learns to read member 0 (or invert member 1) and is exact."""
    rng = np.random.default_rng(0)

    def members(y: np.ndarray) -> np.ndarray:
        confident = rng.uniform(0.6, 1.0, size=len(y))
        right = np.where(y == 1, confident, 1 - confident)
        p_right = np.stack([1 - right, right], axis=1)
        return np.stack([p_right, p_right[:, ::-1]])  # (2 members, N, 2 classes)

    val_y, test_y = rng.integers(0, 2, 200), rng.integers(0, 2, 100)
    val_p, test_p = members(val_y), members(test_y)
    assert side_by_side(val_p).shape == (200, 4)
    assert np.allclose(val_p.mean(axis=0), 0.5)  # the mean is uninformative
    stacked = combine_classification("stacking", val_p, val_y, test_p)
    assert classification_scores(stacked, test_y, 2) == {"acc": 1.0, "macro_f1": 1.0}


def test_regression_mean_and_stacking_and_no_vote() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 50, 1))
    preds = np.stack([a, b])
    y = 2 * a - b + 0.5  # stacking's LinearRegression recovers the weights and the intercept
    assert combine_regression("mean", preds, y, preds) == pytest.approx((a + b) / 2)
    assert combine_regression("stacking", preds, y, preds) == pytest.approx(y)
    with pytest.raises(ConfigValueError, match=r"ensemble.combine lists 'vote', but this run is a regression"):
        combine_regression("vote", preds, y, preds)


def test_classification_scores_match_a_hand_count() -> None:
    # y = 0 0 1 1, pred = 0 1 1 1: acc 3/4; F1 class 0 = 2*1*0.5/1.5 = 2/3, class 1 = 2*(2/3)*1/(5/3) = 0.8.
    scores = classification_scores(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), 2)
    assert scores["acc"] == 0.75
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


# -- the plan: errors name the key ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": 0}, "ensemble.members=0 is out of range: it must be >= 2."),
        ({"members": 1}, "ensemble.members=1 is out of range: it must be >= 2."),
        ({"vary": "bagging"}, "ensemble.vary='bagging' is not a valid choice."),
        ({"combine": ["mean", "votes"]}, "ensemble.combine='votes' is not a valid choice. Did you mean 'vote'?"),
        ({"combine": []}, "ensemble.combine is empty."),
        ({"combine": ["mean", "mean"]}, "lists a method twice"),
    ],
)
def test_a_bad_plan_names_its_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigValueError) as e:
        EnsemblePlan(**kwargs)
    assert message in str(e.value)


def test_a_vote_on_a_regression_is_refused_before_training(tmp_path: Path) -> None:
    cfg = compose_ensemble([*TINY, "data=diabetes", "ensemble.members=2"], tmp_path / "run")
    with pytest.raises(ConfigValueError, match=r"lists 'vote', but this dataset is a regression"):
        ensemble(cfg)
    assert not (tmp_path / "run" / "member_0").exists()


def test_a_bad_config_is_refused_before_any_member_trains(tmp_path: Path) -> None:
    cfg = compose_ensemble([*TINY, "ensemble.members=0"], tmp_path / "run")
    with pytest.raises(ConfigValueError, match=r"^ensemble.members=0 is out of range"):
        ensemble(cfg)
    assert not (tmp_path / "run").exists()


def test_members_without_checkpoints_are_refused(tmp_path: Path) -> None:
    cfg = compose_ensemble(["callbacks=none"], tmp_path / "run")
    with pytest.raises(ConfigValueError, match=r"^callbacks.model_checkpoint is off, but the ensemble reloads"):
        ensemble(cfg)


def test_misspelled_ensemble_keys_get_a_suggestion() -> None:
    hydra_message = "Could not override 'ensemble.member'.\nKey 'member' is not in struct\n"
    message = explain_override(hydra_message, ["ensemble.member=3"])
    assert message == (
        "Unknown key 'ensemble.member': 'ensemble' has no key 'member'. Did you mean 'ensemble.members'? "
        "Keys of 'ensemble': members, vary, combine."
    )


def test_members_share_the_split_and_differ_by_seed(tmp_path: Path) -> None:
    cfg = compose_ensemble(["seed=7", "ensemble.vary=bootstrap"], tmp_path)
    member = member_config(cfg, 2, "bootstrap", tmp_path)
    assert member.seed == 9 and member.data.seed == 7  # the ensemble's split, the member's own init
    (edit,) = row_edits(member)
    assert isinstance(edit, Bootstrap) and edit.seed == 9  # the member's own resample of that split
    assert member.paths.output_dir == str(tmp_path / "member_2") and "ensemble" not in member
    assert row_edits(member_config(cfg, 0, "seed", tmp_path)) == []


@pytest.mark.parametrize(
    ("data_edit", "order"),
    [
        # no bootstrap listed: it goes at the end of the split stage, before fill/targets/order edits
        ("[missing,imbalance,impute]", ["missing", "imbalance", "bootstrap", "impute"]),
        ("[imbalance]", ["imbalance", "bootstrap"]),
        ("[fixed_order]", ["bootstrap", "fixed_order"]),
        # a listed bootstrap keeps its place (and gets the member's seed)
        ("[bootstrap,imbalance]", ["bootstrap", "imbalance"]),
    ],
)
def test_bootstrap_members_add_the_bootstrap_edit_in_stage_order(tmp_path: Path, data_edit: str, order) -> None:
    cfg = compose_ensemble(["seed=7", "ensemble.vary=bootstrap", f"data_edit={data_edit}"], tmp_path)
    member = member_config(cfg, 1, "bootstrap", tmp_path)
    assert list(member.data_edit) == order
    assert member.data_edit.bootstrap.seed == 8
    assert [e.name for e in row_edits(member)] == order  # builds, and check_order accepts it
    check_order(row_edits(member))


def test_an_ensemble_refuses_kfold(tmp_path: Path) -> None:
    cfg = compose_ensemble([*TINY, "data_edit=kfold"], tmp_path / "run")
    with pytest.raises(ConfigValueError, match="data_edit lists kfold: an ensemble trains on one split"):
        ensemble(cfg)
    assert not (tmp_path / "run" / "member_0").exists()


# -- the command, end to end on 3 tiny members -------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], Path]:
    run_dir = tmp_path_factory.mktemp("ensemble") / "run"
    cfg = compose_ensemble([*TINY, "ensemble.members=3", "seed=3"], run_dir)
    return ensemble(cfg), run_dir


def test_each_member_is_a_run_folder_with_its_seed(tiny_ensemble) -> None:
    metrics, run_dir = tiny_ensemble
    for i in range(3):
        member = run_dir / f"member_{i}"
        assert (member / "checkpoints" / "best.ckpt").is_file() and list(member.glob("events.out.tfevents*"))
        config = OmegaConf.load(member / ".hydra" / "config.yaml")
        assert config.seed == 3 + i and config.data.seed == 3
        # The member's own test metrics come from the checkpoint the ensemble reloads.
        own = json.loads((member / "metrics.json").read_text())
        assert metrics[f"member_{i}/test/acc"] == pytest.approx(own["test/acc"], abs=1e-9)
        assert metrics[f"member_{i}/test/macro_f1"] == pytest.approx(own["test/macro_f1"], abs=1e-9)


def test_metrics_json_summarizes_the_members_and_the_combinations(tiny_ensemble) -> None:
    metrics, run_dir = tiny_ensemble
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    for m in ("acc", "macro_f1"):
        values = [metrics[f"member_{i}/test/{m}"] for i in range(3)]
        assert metrics[f"members/mean/test/{m}"] == pytest.approx(np.mean(values))
        assert metrics[f"members/best/test/{m}"] == max(values)
        for method in ("mean", "vote", "stacking"):
            assert 0.0 <= metrics[f"ensemble/{method}/test/{m}"] <= 1.0
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_the_table_and_the_bar_chart_are_written(tiny_ensemble) -> None:
    metrics, run_dir = tiny_ensemble
    rows = (run_dir / "ensemble.csv").read_text().splitlines()
    assert rows[0] == "model,test acc,test macro_f1"
    names = [r.split(",")[0] for r in rows[1:]]
    assert names == [
        "member 0 (seed 3)",
        "member 1 (seed 4)",
        "member 2 (seed 5)",
        "members: mean",
        "members: best",
        "ensemble: mean",
        "ensemble: vote",
        "ensemble: stacking",
    ]
    assert float(rows[-1].split(",")[1]) == pytest.approx(metrics["ensemble/stacking/test/acc"])
    assert "| ensemble: vote |" in (run_dir / "ensemble.md").read_text()
    png = run_dir / "figures" / "ensemble.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert list(run_dir.glob("events.out.tfevents*"))


def test_bootstrap_members_train_on_their_own_resample(tmp_path: Path) -> None:
    cfg = compose_ensemble([*TINY, "ensemble.members=2", "ensemble.vary=bootstrap"], tmp_path / "run")
    metrics = ensemble(cfg)
    assert metrics["members/mean/test/acc"] == pytest.approx(
        np.mean([metrics["member_0/test/acc"], metrics["member_1/test/acc"]])
    )
    saved = [OmegaConf.load(tmp_path / "run" / f"member_{i}" / ".hydra" / "config.yaml") for i in (0, 1)]
    assert [c.data_edit.bootstrap.seed for c in saved] == [0, 1] and [c.data.seed for c in saved] == [0, 0]


def test_a_regression_ensemble_reports_mse_lower_is_better(tmp_path: Path) -> None:
    overrides = [*TINY, "data=diabetes", "ensemble.members=2", "ensemble.combine=[mean,stacking]"]
    metrics = ensemble(compose_ensemble(overrides, tmp_path / "run"))
    values = [metrics[f"member_{i}/test/mse"] for i in (0, 1)]
    assert metrics["members/best/test/mse"] == min(values)
    assert metrics["members/mean/test/mse"] == pytest.approx(np.mean(values))
    # Averaging never hurts a squared error: MSE(mean) = mean MSE - the members' spread (ambiguity).
    assert metrics["ensemble/mean/test/mse"] <= metrics["members/mean/test/mse"] + 1e-9
    own = json.loads((tmp_path / "run" / "member_1" / "metrics.json").read_text())
    assert values[1] == pytest.approx(own["test/mse"], rel=1e-5)
    assert {k.split("/")[1] for k in metrics if k.startswith("ensemble/")} == {"mean", "stacking"}


# -- the command line ------------------------------------------------------------------------
def test_the_cli_refuses_an_unknown_combination_in_one_paragraph(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nnlab.commands.ensemble", "ensemble.combine=[mean,median]", *TINY],
        cwd=tmp_path,
        env={**cli_env(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "Error: ensemble.combine='median' is not a valid choice. Did you mean 'mean'? "
        "Choose one of: mean, vote, stacking."
    )
    assert not list(tmp_path.rglob("member_0"))
