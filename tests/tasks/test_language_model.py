"""Text through the whole engine: a language model's run (bits per character, the n-gram
baseline beside it, a sampled continuation in the Text tab, its tokenizer in the run folder),
exact resume, generation, ONNX export with parity, attention maps; a text classifier with its
bag-of-words baseline. Tiny models on a small text file: seconds each."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import Run, compose_config, epoch_curve, train_tiny
from nnlab.checks.untrusted import UntrustedConfigError, read_tokenizer
from nnlab.errors import UserError
from nnlab.runs.pipeline import train
from nnlab.runs.restore import load_run

# English prose from the Python documentation's topics, as the corpus data=python_docs reads.
TEXT = " ".join(__import__("pydoc_data.topics").topics.topics[k] for k in ("for", "while", "if", "function", "class"))

TINY_GPT = ("model=gpt", "model.d_model=16", "model.num_heads=2", "model.num_layers=1", "model.dropout=0.0")
TINY_LSTM = ("model=char_lstm", "model.embed_dim=8", "model.hidden_size=16", "model.num_layers=1", "model.dropout=0")


def lm_overrides(text_file: Path, *model: str) -> list[str]:
    return [
        "data=text",
        f"data.dataset.path='{text_file}'",
        "data.dataset.block_size=16",
        "data.dataset.segments=20",
        "data.batch_size=16",
        "task=language_model",
        "task.sample_tokens=20",
        "task.baseline_max_order=3",
        *(model or TINY_GPT),
    ]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "docs.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt_run(text_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny([*lm_overrides(text_file), "trainer.max_epochs=2"], tmp_path_factory.mktemp("gpt"))


def test_a_language_model_reports_bits_per_character_beside_its_ngram_baseline(gpt_run: Run) -> None:
    m = gpt_run.metrics
    for split in ("val", "test"):
        assert m[f"{split}/ppl"] == pytest.approx(math.exp(m[f"{split}/loss"]), rel=1e-6)
        # Characters: one token each, so bits per character are nats per token / ln 2.
        assert m[f"{split}/bpc"] == pytest.approx(m[f"{split}/loss"] / math.log(2), rel=1e-6)
        assert 0.0 <= m[f"{split}/acc"] <= 1.0
    # The baseline: a proper n-gram model on the same windows, far better than uniform guessing.
    vocab = read_tokenizer(gpt_run.dir / "tokenizer.json").vocab_size
    assert 0 < m["test/baseline_bpc"] < math.log2(vocab)
    assert m["baseline/bpc"] == pytest.approx(m["baseline/loss"] / math.log(2), rel=1e-6)
    # The baseline's val curve is a run of its own, on the same chart (epoch/bpc) as train and val.
    events = epoch_curve(gpt_run.dir, "baseline/bpc")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx([m["baseline/bpc"]] * 2, rel=1e-6)
    assert epoch_curve(gpt_run.dir, "val/bpc")[-1].value == pytest.approx(m["val/bpc"], rel=1e-6)


def test_each_epoch_logs_a_sampled_continuation_and_the_run_keeps_its_tokenizer(gpt_run: Run) -> None:
    events = EventAccumulator(str(gpt_run.dir), size_guidance={"tensors": 0})
    events.Reload()
    samples = events.Tensors("val/sample/text_summary")
    assert [s.step for s in samples] == [1, 2]
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("The ") and len(text) > len("The ")
    tokenizer = read_tokenizer(gpt_run.dir / "tokenizer.json")  # through the untrusted-file gate
    assert tokenizer.decode(tokenizer.encode("for loops")) == "for loops"
    assert (gpt_run.dir / "figures" / "attention.png").is_file()  # the GPT's attention maps


def test_a_resumed_language_model_ends_bitwise_identical(text_file: Path, tmp_path: Path) -> None:
    overrides = [
        *lm_overrides(text_file, *TINY_LSTM),
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=null",
        "trainer.deterministic=true",
        "model.num_layers=2",
        "model.dropout=0.2",  # random numbers in every step
        "callbacks.model_checkpoint.every_n_train_steps=5",
    ]
    reference = train_tiny(overrides, tmp_path / "reference")
    snapshot = reference.dir / "checkpoints" / "step-000005.ckpt"
    assert torch.load(snapshot, weights_only=True)["epoch"] == 0  # mid-way through the first epoch
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    shutil.copy(snapshot, run_dir / "start.ckpt")
    cfg = compose_config([*overrides, "callbacks.progress=null", f"ckpt_path='{run_dir / 'start.ckpt'}'"], run_dir)
    resumed = Run(cfg, train(cfg), run_dir)
    want, got = reference.checkpoint("last"), resumed.checkpoint("last")
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert resumed.metrics == reference.metrics


def test_predict_continues_a_prompt_and_eval_rescores_the_run(gpt_run: Run, tmp_path: Path) -> None:
    from nnlab.commands.eval import evaluate
    from nnlab.commands.predict import predict

    ckpt = gpt_run.dir / "checkpoints" / "best.ckpt"
    cfg = compose_config([f"ckpt_path='{ckpt}'", "prompt='The for'", "max_new_tokens=30"], tmp_path / "p", "predict")
    result = predict(cfg)
    assert result["prompt_tokens"] == 7 and result["generated_tokens"] == 30
    generated = (tmp_path / "p" / "generated.txt").read_text(encoding="utf-8")
    assert generated.startswith("The for") and len(generated.rstrip("\n")) == 7 + 30
    # The same seed, the same text; greedy decoding (temperature 0) too.
    again = compose_config([f"ckpt_path='{ckpt}'", "prompt='The for'", "max_new_tokens=30"], tmp_path / "q", "predict")
    predict(again)
    assert (tmp_path / "q" / "generated.txt").read_text(encoding="utf-8") == generated

    cfg = compose_config([f"ckpt_path='{ckpt}'"], tmp_path / "e", "eval")
    metrics = evaluate(cfg)
    assert metrics["test/bpc"] == pytest.approx(gpt_run.metrics["test/bpc"], rel=1e-5)


def test_a_tampered_tokenizer_is_refused_by_the_gate(gpt_run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    for payload, needle in (
        ("not json", "not valid JSON"),
        (json.dumps({"kind": "pickle", "chars": ["a"]}), "kind"),
        (json.dumps({"kind": "char", "chars": ["ab", 3]}), "char"),
    ):
        bad.write_text(payload, encoding="utf-8")
        with pytest.raises(UntrustedConfigError, match=needle):
            read_tokenizer(bad)
    # A run folder whose tokenizer.json is not the one its data rebuild: refused before any use.
    run_dir = tmp_path / "run"
    shutil.copytree(gpt_run.dir, run_dir)
    saved = json.loads((run_dir / "tokenizer.json").read_text())
    saved["chars"] = saved["chars"][::-1]
    (run_dir / "tokenizer.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="tokenizer"):
        load_run(run_dir / "checkpoints" / "best.ckpt", device="cpu")


def test_a_gpt_exports_to_onnx_with_parity(gpt_run: Run, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nnlab.deploy import checks, convert, runtime

    r = load_run(gpt_run.dir / "checkpoints" / "best.ckpt", device="cpu")
    test = list(r.data.eval_batches("test"))
    path = convert.to_onnx(r.model, test[0][0][:8], tmp_path / "gpt.onnx")
    result = checks.check_parity("onnx", runtime.onnx_predictor(path), runtime.torch_predictor(r.model), test)
    assert result["max_abs_diff"] <= 1e-4 and result["argmax_agree"] == 1.0


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sentences labelled by the topic they come from: two classes, 120 rows."""
    path = tmp_path_factory.mktemp("csv") / "texts.csv"
    topics = __import__("pydoc_data.topics").topics.topics
    rows = []
    for label, key in (("statements", "compound"), ("methods", "customization")):
        words = topics[key].split()
        rows += [(" ".join(words[i : i + 8]), label) for i in range(0, 60 * 8, 8)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    return path


@pytest.mark.parametrize("model", ["transformer", "text_lstm", "text_cnn"])
def test_a_text_classifier_reports_its_bag_of_words_baseline(model: str, labelled_csv: Path, tmp_path: Path) -> None:
    run = train_tiny(
        ["data=text_csv", f"data.dataset.path='{labelled_csv}'", "data.dataset.max_len=48", f"model={model}"],
        tmp_path,
    )
    assert 0.0 <= run.metrics["test/baseline_acc"] <= 1.0 and "baseline/acc" in run.metrics
    assert 0.0 <= run.metrics["test/acc"] <= 1.0
    assert (run.dir / "tokenizer.json").is_file()
    if model == "transformer":
        assert (run.dir / "figures" / "attention.png").is_file()


def test_a_model_without_an_embedding_is_refused_for_text(labelled_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        train_tiny(["data=text_csv", f"data.dataset.path='{labelled_csv}'", "model=mlp"], tmp_path)
    message = str(info.value)
    assert "model=mlp and data=text_csv" in message and "model=transformer" in message


def test_the_language_model_task_refuses_data_that_is_not_text(tmp_path: Path) -> None:
    with pytest.raises(InstantiationException) as info:  # (the command line shows the cause alone)
        train_tiny(["task=language_model", "model=mlp"], tmp_path)
    assert "task=language_model predicts the next token" in str(info.value.__cause__)
    assert "data=python_docs" in str(info.value.__cause__)


@pytest.fixture(scope="module")
def text_transformer_run(labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny(
        ["data=text_csv", f"data.dataset.path='{labelled_csv}'", "data.dataset.max_len=48", "model=transformer"],
        tmp_path_factory.mktemp("text_transformer"),
    )


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny(["experiment=digits_vit", "model.num_layers=1"], tmp_path_factory.mktemp("vit"))


@pytest.mark.parametrize("which", ["text_transformer_run", "vit_run"])
def test_transformers_export_to_onnx_with_parity(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nnlab.deploy import checks, convert, runtime

    run: Run = request.getfixturevalue(which)
    r = load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")
    test = list(r.data.eval_batches("test"))
    path = convert.to_onnx(r.model, test[0][0][:8], tmp_path / "model.onnx")
    onnx_model = runtime.onnx_predictor(path)
    result = checks.check_parity("onnx", onnx_model, runtime.torch_predictor(r.model), test)
    assert result["max_abs_diff"] <= 1e-4 and result["argmax_agree"] == 1.0
    assert onnx_model(test[0][0][:3]).shape == (3, r.data.num_outputs)  # the batch stays dynamic


def test_explain_shows_attention_maps_of_text_and_of_images(text_transformer_run: Run, vit_run: Run, tmp_path: Path):
    pytest.importorskip("captum")
    from nnlab.commands.explain import explain_run

    for name, run in (("text", text_transformer_run), ("vit", vit_run)):
        ckpt = run.dir / "checkpoints" / "best.ckpt"
        cfg = compose_config([f"ckpt_path='{ckpt}'", "explain.num_samples=2"], tmp_path / name, "explain")
        metrics = explain_run(cfg)
        assert (tmp_path / name / "figures" / "attention.png").is_file()
        if name == "text":  # token ids: attention maps only, no gradient attributions
            assert metrics["attention/layers"] == 2.0
        else:  # images: the attributions as for any classifier, and the ViT's attention
            assert (tmp_path / name / "figures" / "attributions.png").is_file()
    cfg = compose_config([f"ckpt_path='{ckpt}'", "explain.attention_head=9"], tmp_path / "bad", "explain")
    with pytest.raises(UserError, match="explain.attention_head=9: head 9 does not exist"):
        explain_run(cfg)


@pytest.mark.parametrize("precision", ["bf16"])
def test_a_gpt_trains_under_cpu_autocast(precision: str, text_file: Path, tmp_path: Path) -> None:
    run = train_tiny([*lm_overrides(text_file), f"trainer.precision={precision}", "trainer.device=cpu"], tmp_path)
    assert all(math.isfinite(v) for v in run.metrics.values()), run.metrics
