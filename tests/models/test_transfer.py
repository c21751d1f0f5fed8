"""Transfer learning: the few-label row edits (classes, few_labels), bagging (bootstrap),
`model.init_from`, `model.freeze`, `model.backbone_lr_scale`, and the autoencoder ->
encoder_classifier path of SSL pretraining."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY, compose_config, run_cli, train_tiny
from nnlab.data import sklearn
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.bootstrap import Bootstrap
from nnlab.data.edits.classes import KeepClasses
from nnlab.data.edits.few_labels import FewLabels
from nnlab.engine.precision import Precision
from nnlab.engine.rng import seed_everything
from nnlab.errors import ConfigValueError, UserError
from nnlab.runs.build import build_model
from nnlab.runs.restore import load_run


@pytest.fixture(scope="module")
def digits():
    return sklearn.digits()


def rows(data: DataModule, split: str) -> set[bytes]:
    x = data._arrays[split][0]
    return {r.tobytes() for r in x.reshape(len(x), -1)}


# --- data: bootstrap (bagging) ------------------------------------------------------------------


def test_bootstrap_resamples_train_rows_only(digits) -> None:
    plain = DataModule(digits, normalize="none", seed=3)
    boot = DataModule(digits, normalize="none", edits=[Bootstrap()], seed=3)
    x, y = boot._arrays["train"]
    # Same count, every row drawn from the plain train split, some drawn more than once.
    assert len(x) == plain.size("train")
    assert rows(boot, "train") <= rows(plain, "train")
    flat = x.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) < 0.8 * len(x)  # ~63% distinct rows expected
    # Val and test are exactly the plain ones.
    for split in ("val", "test"):
        for a, b in zip(boot._arrays[split], plain._arrays[split]):
            np.testing.assert_array_equal(a, b)
    # Deterministic per seed (None: data.seed), different across seeds on the same split.
    again = DataModule(digits, normalize="none", edits=[Bootstrap(seed=3)], seed=3)
    np.testing.assert_array_equal(again._arrays["train"][0], x)
    other = DataModule(digits, normalize="none", edits=[Bootstrap(seed=4)], seed=3)
    assert not np.array_equal(other._arrays["train"][0], x)
    assert rows(other, "train") <= rows(plain, "train")  # the same split, another resample of it


# --- data: keep classes, few labels --------------------------------------------------------------


def test_classes_are_kept_and_relabelled_in_listed_order(digits) -> None:
    data = DataModule(digits, normalize="none", edits=[KeepClasses([7, 5, 9])], seed=0)
    assert data.class_names == ["7", "5", "9"] and data.num_classes == 3 and data.num_outputs == 3
    for split in ("train", "val", "test"):
        x, y = data._arrays[split]
        assert set(np.unique(y)) == {0, 1, 2}
        # Every row of relabelled class i is a row of the original class [7, 5, 9][i].
        for new, old in enumerate([7, 5, 9]):
            originals = {r.tobytes() for r in digits.x[digits.y == old]}
            assert {r.tobytes() for r in x[y == new]} <= originals
    total = sum(data.size(s) for s in ("train", "val", "test"))
    assert total == int(np.isin(digits.y, [5, 7, 9]).sum())
    # Class names work too.
    assert DataModule(digits, edits=[KeepClasses(["7", "5", "9"])], seed=0).class_names == ["7", "5", "9"]


def test_keep_classes_edits_a_dataset_on_its_own(digits) -> None:
    """What `select_classes(ds, classes)` was: the dataset edit, without a DataModule."""
    kept = KeepClasses([7, 5]).edit_dataset(digits, seed=0)
    assert kept.class_names == ["7", "5"] and kept.num_classes == 2
    np.testing.assert_array_equal(kept.x, digits.x[np.isin(digits.y, [5, 7])])
    np.testing.assert_array_equal(kept.y, np.where(digits.y[np.isin(digits.y, [5, 7])] == 7, 0, 1))


def test_few_labels_keeps_n_training_rows_per_class(digits) -> None:
    five = KeepClasses([5, 6, 7, 8, 9])
    full = DataModule(digits, normalize="none", edits=[five], seed=1)
    few = DataModule(digits, normalize="none", edits=[five, FewLabels(4)], seed=1)
    assert np.bincount(few._arrays["train"][1]).tolist() == [4] * 5
    assert rows(few, "train") <= rows(full, "train")
    for split in ("val", "test"):  # untouched: runs with few and many labels score the same rows
        np.testing.assert_array_equal(few._arrays[split][0], full._arrays[split][0])
    other_seed = DataModule(digits, normalize="none", edits=[five, FewLabels(4)], seed=2)
    assert rows(other_seed, "train") != rows(few, "train")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda: KeepClasses([3, 12]), "data_edit.classes.classes: unknown class 12"),
        (lambda: KeepClasses(["3", "eigth"]), "data_edit.classes.classes: unknown class 'eigth'"),
        (lambda: KeepClasses([3, 3]), r"data_edit.classes.classes=\[3, 3\] must list at least two different classes"),
        (lambda: FewLabels(1000), "Lower data_edit.few_labels.per_class to at most"),
        (lambda: FewLabels(0), "data_edit.few_labels.per_class=0 is out of range"),
    ],
)
def test_few_label_options_are_validated(digits, edit, message) -> None:
    with pytest.raises(ConfigValueError, match=message):
        DataModule(digits, edits=[edit()])


def test_few_label_options_need_classes() -> None:
    with pytest.raises(ConfigValueError, match="data_edit.classes works on class labels.*regression"):
        DataModule(sklearn.diabetes(), stratify=False, edits=[KeepClasses([0, 1])])
    with pytest.raises(ConfigValueError, match="data_edit.few_labels works on class labels.*regression"):
        DataModule(sklearn.diabetes(), stratify=False, edits=[FewLabels(3)])


# --- transfer: init_from, freeze, backbone_lr_scale --------------------------------------------

# Digits 0-4 pretrain a 5-way MLP; the fine-tuning runs below are 10-way, so the head cannot fit.
PRETRAIN = [
    "data=digits",
    "data_edit=classes",
    "data_edit.classes.classes=[0,1,2,3,4]",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
]
# Linear (no bias: the BN after it shifts), BN, Linear, BN; then dropout and the head.
BACKBONE_NAMES = ["net.1.weight", "net.2.weight", "net.2.bias", "net.5.weight", "net.6.weight", "net.6.bias"]
HEAD = ["net.9.weight", "net.9.bias"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    run = train_tiny(PRETRAIN, tmp_path_factory.mktemp("pretrain") / "run")
    return run.dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def autoencoder_ckpt(tmp_path_factory) -> Path:
    run = train_tiny(["data=digits", "model=autoencoder"], tmp_path_factory.mktemp("ssl") / "run")
    return run.dir / "checkpoints" / "last.ckpt"


def built(overrides: list[str], run_dir: Path):
    """(data, model, task) as a run with these overrides builds them (seeded the same way)."""
    cfg = compose_config([*TINY, *overrides], run_dir)
    seed_everything(cfg.seed)
    return build_model(cfg)


def source_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True)["model"]


def test_init_from_copies_matching_tensors_and_reinitialises_the_new_head(pretrained, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="nnlab.models.transfer"):
        _, model, _ = built(["data=digits", f"transfer.init_from='{pretrained}'"], tmp_path)
    source = source_weights(pretrained)
    state = model.state_dict()
    assert model.net[9].out_features == 10 and source["net.9.weight"].shape[0] == 5
    result = model.nnlab_transfer
    assert set(BACKBONE_NAMES) <= set(result.copied) and not set(HEAD) & set(result.copied)
    for name in result.copied:  # weights and BN statistics, exactly
        assert torch.equal(state[name], source[name]), name
    assert result.reinitialised == HEAD
    _, fresh, _ = built(["data=digits"], tmp_path / "fresh")
    assert torch.equal(state["net.9.weight"], fresh.state_dict()["net.9.weight"])  # its own seeded init
    assert f"copied {len(result.copied)} tensors" in caplog.text and "re-initialised: ['net.9.weight'" in caplog.text


def test_init_from_an_unrelated_checkpoint_is_refused(autoencoder_ckpt, tmp_path) -> None:
    with pytest.raises(UserError, match=r"no parameter of MLP matches the checkpoint by name and shape"):
        built(["data=digits", f"transfer.init_from='{autoencoder_ckpt}'"], tmp_path)


def test_frozen_backbone_stays_bit_identical_while_the_head_trains(pretrained, tmp_path) -> None:
    overrides = ["data=digits", f"transfer.init_from='{pretrained}'", "transfer.freeze=[backbone]"]
    _, model, _ = built(overrides, tmp_path / "built")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(HEAD)
    initial_head = model.net[9].weight.detach().clone()
    run = train_tiny([*overrides, "trainer.limit_train_batches=4"], tmp_path / "run")
    after, source = run.checkpoint("last")["model"], source_weights(pretrained)
    for name in BACKBONE_NAMES + [f"net.{i}.{s}" for i in (2, 6) for s in ("running_mean", "running_var")]:
        assert torch.equal(after[name], source[name]), name  # frozen BN statistics too (eval mode)
    assert not torch.equal(after["net.9.weight"], initial_head)


def test_frozen_batchnorm_is_held_in_eval_mode(pretrained, tmp_path) -> None:
    _, model, _ = built(
        ["data=digits", f"transfer.init_from='{pretrained}'", "transfer.freeze=[net.1,net.2]"], tmp_path
    )
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == BACKBONE_NAMES[:3]
    model.train()
    model(torch.randn(8, 1, 8, 8))
    assert not model.net[2].training and model.net[6].training  # only the frozen one


def test_backbone_lr_scale_makes_two_parameter_groups(pretrained, tmp_path) -> None:
    overrides = ["data=digits", "optimizer=adam", "optimizer.lr=0.01", f"transfer.init_from='{pretrained}'"]
    _, model, task = built([*overrides, "transfer.backbone_lr_scale=0.1"], tmp_path)
    task.configure(torch.device("cpu"), Precision(32, torch.device("cpu")), total_steps=10)
    groups = task.optim.optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert [g["lr"] for g in groups] == [pytest.approx(0.001), pytest.approx(0.01)]
    assert {names[id(p)] for p in groups[0]["params"]} == set(BACKBONE_NAMES)
    assert {names[id(p)] for p in groups[1]["params"]} == set(HEAD)


def test_without_transfer_the_optimizer_is_unchanged(tmp_path) -> None:
    _, model, task = built(["data=digits", "optimizer=adam", "optimizer.lr=0.01"], tmp_path)
    task.configure(torch.device("cpu"), Precision(32, torch.device("cpu")), total_steps=10)
    (group,) = task.optim.optimizer.param_groups
    assert group["lr"] == 0.01 and [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert not hasattr(model, "nnlab_transfer")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["transfer.freeze=[net.7]"],
            r"'net.7' is no parameter prefix of MLP.*are: net.1, net.2, net.5, net.6, net.9",
        ),
        (["transfer.freeze=[backbone]"], "transfer.init_from, which is not set"),
        (["transfer.backbone_lr_scale=0.1"], "transfer.init_from, which is not set"),
        (["transfer.init_from=nowhere.ckpt"], "transfer.init_from=nowhere.ckpt: no such checkpoint file"),
        (["+transfer.unfreeze=[net.1]"], "Unknown key 'transfer.unfreeze'"),
        (["transfer.freeze=[net]"], "freezes every trainable parameter of MLP"),
    ],
)
def test_transfer_mistakes_are_explained(overrides, message, tmp_path) -> None:
    with pytest.raises(UserError, match=message):
        built(["data=digits", *overrides], tmp_path)


def test_backbone_lr_scale_is_refused_by_other_tasks(autoencoder_ckpt, tmp_path) -> None:
    overrides = ["data=digits", "model=autoencoder", f"transfer.init_from='{autoencoder_ckpt}'"]
    with pytest.raises(ConfigValueError, match="supported by the supervised task only, not by Reconstruction"):
        built([*overrides, "transfer.backbone_lr_scale=0.1"], tmp_path)


def test_a_gan_keeps_something_to_train_in_each_network_it_optimizes(tmp_path) -> None:
    """The GAN task declares that G and D each train with an optimizer of its own
    (`own_optimizer_parts`): freezing some of D's layers is fine, freezing all of G is not."""
    _, model, task = built(["experiment=digits_gan", "transfer.freeze=[discriminator.net.0]"], tmp_path)
    assert task.own_optimizer_parts == ("generator", "discriminator")
    assert not model.discriminator.net[0].weight.requires_grad and model.discriminator.net[2].weight.requires_grad
    whole = r"freezes the whole generator, .* an optimizer of its own.*e\.g\. \[generator\.net\.0\]"
    with pytest.raises(ConfigValueError, match=whole):
        built(["experiment=digits_gan", "transfer.freeze=[generator]"], tmp_path)


def test_transfer_is_refused_for_models_without_gradients(tmp_path) -> None:
    with pytest.raises(ConfigValueError, match="need a model trained by gradients, but SOM"):
        built(["data=digits", "model=som", "transfer.init_from=any.ckpt"], tmp_path)


def test_encoder_classifier_starts_from_an_autoencoders_encoder(autoencoder_ckpt, tmp_path) -> None:
    _, model, _ = built(
        ["data=digits", "model=encoder_classifier", f"transfer.init_from='{autoencoder_ckpt}'"], tmp_path
    )
    source, state = source_weights(autoencoder_ckpt), model.state_dict()
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and model.nnlab_transfer.copied == encoder
    assert model.nnlab_transfer.reinitialised == ["head.weight", "head.bias"]
    for name in encoder:
        assert torch.equal(state[name], source[name]), name
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_a_finetuned_run_restores_without_its_source_checkpoint(pretrained, tmp_path) -> None:
    source = tmp_path / "source.ckpt"
    shutil.copy(pretrained, source)
    run = train_tiny(["data=digits", f"transfer.init_from='{source}'"], tmp_path / "run")
    source.unlink()  # restoring reads the run's own weights only
    restored = load_run(run.dir / "checkpoints" / "last.ckpt", device="cpu")
    after = run.checkpoint("last")["model"]
    assert all(torch.equal(v, after[k]) for k, v in restored.model.state_dict().items())


def test_reinit_leaves_fitting_layers_fresh(pretrained, tmp_path) -> None:
    overrides = [
        "data=digits",
        "data_edit=classes",
        "data_edit.classes.classes=[5,6,7,8,9]",
        f"transfer.init_from='{pretrained}'",
    ]
    _, model, _ = built([*overrides, "transfer.reinit=[net.9,net.6]"], tmp_path)
    copied, fresh = model.nnlab_transfer.copied, model.nnlab_transfer.reinitialised
    assert "net.5.weight" in copied  # 5 classes -> 5 classes: everything fits by shape ...
    assert {"net.9.weight", "net.9.bias", "net.6.weight", "net.6.running_mean"} <= set(fresh)  # ... but these
    assert not [k for k in copied if k.startswith(("net.9.", "net.6."))]
    assert torch.equal(model.net[6].running_mean, torch.zeros(128))  # a fresh BN, statistics included


def test_cli_fine_tunes_an_experiment(pretrained, tmp_path) -> None:
    tiny = ["trainer.max_epochs=1", "callbacks.progress=null", "logger=none"]
    ok = run_cli(["experiment=digits59_few_labels", f"transfer.init_from='{pretrained}'", *tiny], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    log = " ".join((ok.stdout + ok.stderr).split())  # the console wraps long lines
    # net.1.weight, net.2 (weight, bias, 3 BN buffers), the same for net.5 and net.6; not the head.
    assert "copied 12 tensors" in log and "re-initialised: ['net.9.weight', 'net.9.bias']" in log


@pytest.mark.slow  # a second interpreter start; the message itself is tested in-process above
def test_cli_explains_a_wrong_checkpoint_in_one_paragraph(autoencoder_ckpt, tmp_path) -> None:
    tiny = ["trainer.max_epochs=1", "callbacks.progress=null", "logger=none"]
    bad = run_cli(["experiment=digits59_few_labels", f"transfer.init_from='{autoencoder_ckpt}'", *tiny], tmp_path)
    assert bad.returncode == 2
    assert "no parameter of MLP matches the checkpoint by name and shape" in " ".join(bad.stderr.split())


def test_train_yaml_spells_out_the_transfer_options_of_apply_transfer() -> None:
    """One schema: `apply_transfer`'s keyword arguments; train.yaml's `transfer` node lists the
    same keys with the same defaults (nothing transferred)."""
    import yaml

    from helpers import CONFIG_DIR
    from nnlab.models.transfer import transfer_options

    node = yaml.safe_load((CONFIG_DIR / "train.yaml").read_text())["transfer"]
    defaults = transfer_options()
    assert list(node) == list(defaults)
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()} == node
