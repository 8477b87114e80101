"""Training protocol: arms, phases, selection on validation only, outputs, comparison table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fairsynth.downstream import compare as compare_module
from fairsynth.downstream.compare import compare, paired_delta, render_table, summarise
from fairsynth.downstream.config import DownstreamConfig, MixConfig
from fairsynth.downstream.data import load_sets
from fairsynth.downstream.fairness import ddi_group
from fairsynth.downstream.train import phases_of, save_run, train_run

TINY = dict(backbone="test_resnet", image_size=32, epochs=6, batch_size=16, learning_rate=3e-3, patience=6,
            bootstrap_resamples=50, high_risk=["melanoma", "basal cell carcinoma"], min_positives=1)


def _config(derm_study, **changes) -> DownstreamConfig:
    return DownstreamConfig(real=str(derm_study["real"]), synthetic=str(derm_study["synthetic"]), **{**TINY, **changes})


@pytest.fixture(scope="module")
def sets(derm_study):
    return load_sets(derm_study["real"], derm_study["synthetic"])


@pytest.fixture(scope="module")
def real_run(sets, derm_study):
    return train_run(sets, _config(derm_study, epochs=15, patience=15), "real", seed=0)


def test_real_arm_learns_the_world_classes(real_run):
    metrics = real_run["metrics"]["per_type"]
    # 92 training images of four world lesions at 32 px; chance is 0.25 accuracy, 0.5 AUROC
    assert metrics["accuracy"]["estimate"] > 0.5
    assert metrics["macro_auroc"]["estimate"] > 0.75
    assert real_run["train_images"] == {"real": 92, "synthetic": 0}
    assert 0 <= real_run["selected_epoch"] < len(real_run["history"]) <= 15


def test_selection_never_reads_the_test_split(sets, derm_study, real_run):
    shuffled = dataclasses.replace(sets, test=list(reversed(sets.test)))
    relabelled = dataclasses.replace(
        sets, test=[dataclasses.replace(s, label=sets.classes[(sets.classes.index(s.label) + 1) % 4]) for s in sets.test]
    )
    for other_sets in (shuffled, relabelled):
        other = train_run(other_sets, _config(derm_study, epochs=2), "real", seed=0)
        first = train_run(sets, _config(derm_study, epochs=2), "real", seed=0)
        assert other["history"] == first["history"] and other["selected_epoch"] == first["selected_epoch"]


def test_runs_are_reproducible_for_a_seed(sets, derm_study):
    a = train_run(sets, _config(derm_study, epochs=2), "mixed", seed=3)
    b = train_run(sets, _config(derm_study, epochs=2), "mixed", seed=3)
    assert a["history"] == b["history"]
    assert np.array_equal(a["predictions"].probabilities, b["predictions"].probabilities)


def test_mixed_arm_uses_the_group_shares_and_the_curriculum(sets, derm_study):
    config = _config(derm_study, epochs=3, patience=3, mix=MixConfig("fairskin", curriculum_epochs=3, min_real_share=0.5))
    run = train_run(sets, config, "mixed", seed=0)
    assert run["train_images"] == {"real": 92, "synthetic": 25}  # V: 9 of 16, VI: 16 of 16
    assert [row["synthetic_images"] for row in run["history"]] == [9, 17, 25]
    assert run["mix"]["VI"]["synthetic_used"] == 16


def test_synthetic_pretraining_phase_comes_first_at_the_full_rate(derm_study):
    config = _config(derm_study, synthetic_pretrain_epochs=2, lr_drop=0.1)
    phases = phases_of("mixed", config)
    assert [(p.name, p.real, p.epochs) for p in phases] == [("synthetic-pretrain", False, 2), ("mixed", True, 6)]
    assert phases[1].learning_rate == pytest.approx(0.1 * phases[0].learning_rate)
    assert [p.name for p in phases_of("real", config)] == ["real"]


def test_synthetic_arm_and_domain_adversarial_training_run(sets, derm_study):
    run = train_run(sets, _config(derm_study, epochs=1), "synthetic", seed=0)
    assert run["train_images"] == {"real": 0, "synthetic": 32}
    adversarial = train_run(sets, _config(derm_study, epochs=1, domain_adversarial=0.3), "mixed", seed=0)
    assert adversarial["adversarial"] and any(k.startswith("domain_head") for k in adversarial["state"])


def test_saved_run_holds_weights_predictions_and_metrics(real_run, tmp_path):
    save_run(real_run, tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["classifier.json", "history.json", "metrics.json", "model.safetensors", "predictions.csv"]
    import pandas as pd

    frame = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(frame) == 48 and {"id", "label", "group", "p_melanoma"} <= set(frame.columns)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"per_type", "per_ddi_group"}
    assert set(metrics["metrics"]["per_ddi_group"]["group_auroc"]) == {"I-II", "III-IV", "V-VI"}


def test_fst_grouping_is_ddis():
    assert [ddi_group(g) for g in ("I", "II", "III", "IV", "V", "VI", "unknown")] == [
        "I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI", None
    ]


def test_paired_delta_says_within_noise_only_when_the_interval_holds_zero():
    clear = paired_delta([0.80, 0.82, 0.81], [0.70, 0.71, 0.70])
    assert clear["within_noise"] is False and clear["low"] > 0
    noisy = paired_delta([0.80, 0.70, 0.76], [0.75, 0.74, 0.75])
    assert noisy["within_noise"] is True and noisy["low"] < 0 < noisy["high"]
    # the t-interval of the paired differences, by hand: mean ± t(0.975, 2) * sd / sqrt(3)
    diffs = np.array([0.05, -0.04, 0.01])
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)
    assert noisy["low"] == pytest.approx(diffs.mean() - half) and noisy["high"] == pytest.approx(diffs.mean() + half)
    assert paired_delta([None, 0.5], [0.4, None])["mean"] is None


def test_compare_writes_the_table_and_reuses_finished_runs(derm_study, tmp_path, monkeypatch):
    config = _config(derm_study, epochs=1, seeds=[0, 1], arms=["real", "mixed"])
    messages = []
    result = compare(config, tmp_path / "cmp", log=messages.append)
    assert any("warning: 2 seed(s): a comparison needs at least 3" in m for m in messages)
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| AUROC V-VI ↑ |" in table and "mixed − real" in table
    assert set(result["runs"]) == {"real", "mixed"} and set(result["runs"]["real"]) == {0, 1}
    delta = result["table"]["accuracy"]["delta_vs_real"]["mixed"]
    by_hand = [result["runs"]["mixed"][s]["accuracy"] - result["runs"]["real"][s]["accuracy"] for s in (0, 1)]
    assert delta["mean"] == pytest.approx(np.mean(by_hand))
    # beside the t-interval over seeds: a bootstrap over test images, and the line saying what was compared how
    images = delta["test_images"]
    assert images["resamples"] == 50 and set(images["per_seed"]) == {"0", "1"}
    assert images["low"] <= delta["mean"] <= images["high"]
    tests = result["tests"]
    assert tests["images_by_group"] == {"I-II": 16, "III-IV": 16, "V-VI": 16} and tests["seeds"] == [0, 1]
    assert "Compared on: 2 seeds (0, 1); test set: the test split, 48 images (I-II 16, III-IV 16, V-VI 16)" in table
    assert "paired t-interval over seeds (Student's t, 1 df)" in table and "; test images [" in table

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_module, "train_run", refuse)
    left = [tmp_path / "cmp" / ".compare.json.k2j4.tmp", tmp_path / "cmp" / "real" / "seed-0" / ".metrics.json.x9.tmp"]
    for path in left:  # writes a kill interrupted
        path.write_text("half")
    again = compare(config, tmp_path / "cmp", log=lambda m: None)
    assert again["runs"] == result["runs"]
    assert not any(path.exists() for path in left)

    # The disk fills while the table is written: no compare.json says a comparison is complete.
    import errno

    written = compare_module.atomic_write_text

    def full(path, text):
        if Path(path).name == "compare.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written(path, text)

    for name in ("compare.json", "compare.md"):
        (tmp_path / "cmp" / name).unlink()
    monkeypatch.setattr(compare_module, "atomic_write_text", full)
    with pytest.raises(OSError):
        compare(config, tmp_path / "cmp", log=lambda m: None)
    assert not (tmp_path / "cmp" / "compare.json").exists()


def test_undefined_numbers_are_rendered_as_undefined():
    runs = {"real": {0: {"accuracy": 0.5, "auroc.V-VI": None}}, "mixed": {0: {"accuracy": 0.6, "auroc.V-VI": None}}}
    table = summarise(runs, [0])
    text = render_table(table, ["real", "mixed"], [0])
    assert "| AUROC V-VI ↑ | undefined | undefined | undefined |" in text
    assert "+0.100 (one seed)" in text


def test_classifier_confidence_filter_reads_the_requested_class(real_run, sets, tmp_path):
    from PIL import Image

    from fairsynth.filters import FILTERS
    from fairsynth.filters.base import FilterError
    from fairsynth.filters.config import FilterConfig
    from fairsynth.filters.context import FilterContext

    save_run(real_run, tmp_path / "run")
    cfg = FilterConfig(checks=["classifier_confidence"], options={"classifier_confidence": {"model": str(tmp_path / "run")}})
    (check,) = cfg.build()
    check.setup(FilterContext(cfg))
    samples = sets.test[:24]
    images = [Image.open(s.path) for s in samples]
    values = check.measure(images, [{"label": s.label} for s in samples], None)
    # the stored probability is the run's own softmax for the requested class
    frame = __import__("pandas").read_csv(tmp_path / "run" / "predictions.csv").set_index("id")
    for sample, value in zip(samples, values):
        assert value["classifier_confidence_probability"] == pytest.approx(frame.loc[sample.id, f"p_{sample.label}"], abs=1e-5)
    verdicts = [check.passes(v, {"label": s.label}) for v, s in zip(values, samples)]
    assert verdicts == [v["classifier_confidence_probability"] >= 0.6 for v in values]
    assert sum(verdicts) >= len(verdicts) // 2  # a classifier at ~90 % test accuracy is confident on most
    # a class the classifier does not know fails; an unlabelled image is not judged
    assert check.passes({"classifier_confidence_probability": None}, {"label": "dermatofibroma"}) is False
    assert check.passes({"classifier_confidence_probability": None}, {}) is None
    missing = FILTERS.get("classifier_confidence")(FILTERS.get("classifier_confidence").Config(model=str(tmp_path / "none")))
    with pytest.raises(FilterError, match=r"classifier.json does not exist; train a real-data classifier"):
        missing.setup(None)


def test_cli_compare_prints_the_table_and_bad_input_exits_2(derm_study, tmp_path):
    from typer.testing import CliRunner

    from fairsynth.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: mini\nworkdir: {tmp_path / 'w'}\ndata: {{path: {tmp_path / 'unused.csv'}}}\n"
        f"downstream: {{real: {derm_study['real']}, synthetic: {derm_study['synthetic']}, backbone: test_resnet, "
        "image_size: 32, epochs: 1, bootstrap_resamples: 20, high_risk: [melanoma]}\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["downstream", "compare", "--config", str(recipe), "--arms", "real,mixed", "--seeds", "0"])
    assert result.exit_code == 0, result.output
    assert "| AUROC V-VI ↑ |" in result.output and (tmp_path / "w" / "downstream" / "compare.md").exists()
    assert (tmp_path / "w" / "downstream" / "config.yaml").exists()
    bad = runner.invoke(app, ["downstream", "compare", "--config", str(recipe), "downstream.real=" + str(tmp_path / "nope.jsonl")])
    assert bad.exit_code == 2 and "nope.jsonl does not exist" in bad.output
    one = runner.invoke(app, ["downstream", "train", "--config", str(recipe), "--arm", "real", "--seed", "0"])
    assert one.exit_code == 0 and "real seed 0: accuracy" in one.output


def test_a_saved_run_serves_as_the_classifier_feature_extractor(real_run, sets, tmp_path):
    """model.safetensors holds timm's own names: `evaluate.weights.classifier` reads it as it is."""
    import torch
    from safetensors.torch import load_file

    from fairsynth.downstream.data import ImageSet
    from fairsynth.downstream.model import build_classifier
    from fairsynth.metrics.extractors import create_extractor

    save_run(real_run, tmp_path / "run")
    extractor = create_extractor(
        "classifier", weights=str(tmp_path / "run" / "model.safetensors"), arch="test_resnet", size=32,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    )
    dataset = ImageSet(sets.test[:8], sets.classes, 32)
    uint8 = torch.stack([dataset.load(i) for i in range(8)])  # (8, 3, 32, 32)
    model = build_classifier("test_resnet", 4)
    model.backbone.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))
    model.eval()
    with torch.no_grad():
        floats = torch.stack([dataset[i][0] for i in range(8)])
        expected = model.backbone.forward_head(model.backbone.forward_features(floats), pre_logits=True)
    assert torch.allclose(extractor(uint8), expected, atol=1e-5)


def test_hybrid_arm_generates_for_the_worst_validation_cells(sets, derm_study, tmp_path):
    from fairsynth.downstream.data import Sample
    from fairsynth.downstream.config import HybridConfig
    from tests.downstream.conftest import write_set

    asked = []

    def generate_cells(cells, per_cell, round_index):
        asked.append((list(cells), per_cell, round_index))
        plan = [(label, int({"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}[group]), None) for label, group in cells for _ in range(per_cell)]
        manifest = write_set(tmp_path / f"round-{round_index}", plan, seed=50 + round_index, prefix=f"h{round_index}-")
        loaded = load_sets(derm_study["real"], manifest).synthetic
        return [Sample(s.path, s.label, s.group, True, s.id) for s in loaded]

    config = _config(derm_study, epochs=4, patience=4, hybrid=HybridConfig(every=2, rounds=2, worst_cells=3, images_per_cell=2, min_val_images=2))
    run = train_run(sets, config, "hybrid", seed=0, generate_cells=generate_cells)
    assert [a[1:] for a in asked] == [(2, 0), (2, 1)]
    assert [r["after_epoch"] for r in run["hybrid_rounds"]] == [1, 3] and all(r["images"] == 6 for r in run["hybrid_rounds"])
    # the chosen cells are the ones with the highest validation loss, worst first
    losses = [c["val_loss"] for c in run["hybrid_rounds"][0]["cells"]]
    assert losses == sorted(losses, reverse=True) and len(losses) == 3
    assert run["train_images"]["synthetic"] == 32 + 12  # the static set (mix: all) plus 12 generated
    assert run["history"][2]["synthetic_images"] == 32 + 6
    with pytest.raises(ValueError, match="hybrid arm needs a generator"):
        train_run(sets, config, "hybrid", seed=0)


def test_cell_losses_are_the_mean_cross_entropy_per_class_and_group():
    from fairsynth.downstream.fairness import Predictions
    from fairsynth.downstream.train import cell_losses

    p = Predictions(
        labels=np.array([0, 0, 1, 1, 0]), probabilities=np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
        groups=np.array(["I", "I", "VI", "VI", "unknown"]), classes=("a", "b"),
    )
    losses = cell_losses(p, min_images=2)
    assert losses == pytest.approx({("a", "I"): -(np.log(0.9) + np.log(0.5)) / 2, ("b", "VI"): -(np.log(0.8) + np.log(0.4)) / 2})
    assert cell_losses(p, min_images=3) == {}


def test_selection_ties_go_to_the_lower_validation_loss(real_run):
    """A later epoch with the same score replaces the best only with a lower loss; a higher
    score wins whatever its loss. The loss is torch's cross-entropy of the probabilities."""
    import torch

    from fairsynth.downstream.fairness import Predictions
    from fairsynth.downstream.train import improves, validation_loss

    assert improves(1.0, 0.2, 1.0, 0.3) and not improves(1.0, 0.4, 1.0, 0.3)
    assert improves(0.9, 0.1, 0.8, 0.05) and not improves(0.8, 0.01, 0.9, 0.5)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.25, 0.5, 0.25]])
    labels = np.array([0, 2, 0, 1])
    predictions = Predictions(labels, probabilities, ["I", "II", "V", "VI"], ("a", "b", "c"))
    reference = torch.nn.functional.nll_loss(torch.log(torch.tensor(probabilities)), torch.tensor(labels))
    assert validation_loss(predictions) == pytest.approx(float(reference), abs=1e-12)
    # the run selected the epoch with the best (score, -loss) of its history
    history = real_run["history"]
    best = max(range(len(history)), key=lambda i: (history[i]["val_score"], -history[i]["val_loss"], -i))
    assert real_run["selected_epoch"] == best and real_run["val_loss"] == history[best]["val_loss"]
