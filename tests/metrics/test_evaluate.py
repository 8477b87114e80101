"""`evaluate` end to end on small sets with the random extractor: values, groups, provenance,
undefined groups and the bad inputs that must never become a silent number."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from fairsynth.config import ConfigError
from fairsynth.io import UnsafePathError
from fairsynth.metrics.config import EvaluateConfig
from fairsynth.metrics.evaluate import EvaluationError, evaluate
from tests.metrics.conftest import write_set

FAST = dict(extractor="random", bootstrap=20, kid_subsets=10)


@pytest.fixture
def sets(tmp_path):
    real = write_set(tmp_path / "real", 48, seed=0, splits=["train", "test"])
    synthetic = write_set(tmp_path / "synthetic", 36, seed=1, brightness=15)
    return real, synthetic


def config(tmp_path, real, synthetic, **overrides) -> EvaluateConfig:
    values = dict(real=str(real), synthetic=str(synthetic), output=str(tmp_path / "out"),
                  cache_dir=str(tmp_path / "cache"), **FAST)
    values.update(overrides)
    return EvaluateConfig(**values)


def rows(result, **where):
    return [r for r in result.results if all(r.get(k) == v for k, v in where.items())]


def test_every_metric_overall_and_per_group_with_provenance(tmp_path, sets):
    real, synthetic = sets
    result = evaluate(config(tmp_path, real, synthetic, by=["fst_group", "class"], min_group_size=5))
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())

    # every number says how it was computed, and the random extractor is labelled everywhere
    for row in report["results"]:
        assert row["extractor"] == "random" and row["weights_sha256"] and row["image_size_policy"]
        assert row["implementation"].startswith("fairsynth.metrics.") and "random CNN" in row["implementation"]
        assert row["test_only"] is True and "RANDOM WEIGHTS" in row["warning"]
    extractor = report["extractors"]["random"]
    for field in ("implementation", "weights_sha256", "image_size_policy", "input_size", "feature_dim"):
        assert extractor[field]
    assert any("RANDOM WEIGHTS" in w for w in report["warnings"])
    assert report["metrics"]["fd@random"]["formula"] and report["metrics"]["clip_score@random"]["formula"].startswith("max(100")
    with open(tmp_path / "out" / "evaluation.csv") as handle:
        table = list(csv.DictReader(handle))
    assert table and all(r["test_only"] == "True" and r["weights_sha256"] for r in table)
    assert (tmp_path / "out" / "config.yaml").exists() and (tmp_path / "out" / "memorisation_random.csv").exists()

    # groups: overall, each field, and their combination, with counts
    groups = {(g["by"], g["group"]): (g["n_real"], g["n_synthetic"]) for g in report["groups"]}
    assert groups[("overall", "all")] == (48, 36)
    assert groups[("fst_group", "V-VI")] == (16, 12) and groups[("class", "nevus")] == (24, 18)
    assert groups[("fst_group x class", "V-VI | nevus")] == (8, 6)

    fid = rows(result, metric="fd", group_by="overall")[0]
    assert fid["value"] > 0 and fid["ci_low"] <= fid["value"] <= fid["ci_high"] and fid["resamples"] == 20
    prdc_values = {r["value_name"] for r in rows(result, metric="prdc", group="all")}
    assert prdc_values == {"precision", "recall", "density", "coverage"}
    assert {r["on"] for r in rows(result, metric="vendi", group="all")} == {"synthetic", "real"}
    diversity = rows(result, metric="intra_class_diversity", group_by="fst_group x class", on="synthetic")
    assert len(diversity) == 6 and all(r["value"] is not None for r in diversity)
    assert report["metrics"]["intra_class_diversity@random"]["target"] == 0.3
    kid_size = rows(result, metric="kid", value_name="kid_subset_size", group="V-VI")[0]
    assert kid_size["value"] == 12  # set from the data: min(1000, 16 real, 12 synthetic)


def test_fid_equals_torchmetrics_on_the_same_images_and_extractor(tmp_path, sets):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from fairsynth.data.preprocess import load_rgb
    from fairsynth.metrics.extractors import create_extractor, prepare_image

    real, synthetic = sets
    result = evaluate(config(tmp_path, real, synthetic, metrics=["fd"], by=["fst"], bootstrap=0))
    extractor = create_extractor("random")
    reference = FrechetInceptionDistance(feature=extractor.load()).double()
    for manifest, is_real in ((real, True), (synthetic, False)):
        paths = sorted((manifest.parent / "images").glob("*.png"))
        batch = torch.stack([torch.from_numpy(prepare_image(load_rgb(p), (32, 32))).permute(2, 0, 1) for p in paths])
        reference.update(batch, real=is_real)
    ours = rows(result, metric="fd", group="all")[0]["value"]
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)


def test_per_group_values_equal_the_references_on_that_group_alone(tmp_path, sets):
    """A group's numbers are the metric of that group's images and nothing else: FD against
    torchmetrics and PRDC against the prdc package, each fed only the group's images."""
    compute_prdc = pytest.importorskip("prdc", reason="the prdc reference package is not installed").compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance

    from fairsynth.data.preprocess import load_rgb
    from fairsynth.metrics.extractors import create_extractor, prepare_image

    real, synthetic = sets
    result = evaluate(config(tmp_path, real, synthetic, metrics=["fd", "prdc"], by=["fst_group", "class"],
                             min_group_size=5, bootstrap=0))
    extractor = create_extractor("random")
    network = extractor.load()

    def pixels(manifest, keep) -> torch.Tensor:
        chosen = [json.loads(line) for line in manifest.read_text().splitlines()]
        chosen = [row for row in chosen if keep(row)]
        return torch.stack([
            torch.from_numpy(prepare_image(load_rgb(manifest.parent / row["file_name"]), (32, 32))).permute(2, 0, 1)
            for row in chosen
        ])

    groups = [("fst_group", "V-VI", lambda row: row["fst_group"] == "V-VI"),
              ("class", "nevus", lambda row: row["label"] == "nevus"),
              ("fst_group x class", "I-II | melanoma", lambda row: row["fst_group"] == "I-II" and row["label"] == "melanoma")]
    for group_by, group, keep in groups:
        ours, theirs = pixels(real, keep), pixels(synthetic, keep)
        reference = FrechetInceptionDistance(feature=network).double()
        reference.update(ours, real=True)
        reference.update(theirs, real=False)
        fd = rows(result, metric="fd", group_by=group_by, group=group)[0]["value"]
        assert fd == pytest.approx(float(reference.compute()), rel=1e-4), group
        assert fd != pytest.approx(rows(result, metric="fd", group="all")[0]["value"], rel=1e-3)  # not the overall value

        with torch.no_grad():
            features = [network(batch).double().numpy() for batch in (ours, theirs)]
        expected = compute_prdc(features[0], features[1], nearest_k=3)
        for name, value in expected.items():
            got = rows(result, metric="prdc", group_by=group_by, group=group, value_name=name)[0]["value"]
            assert got == pytest.approx(float(value), rel=1e-6, abs=1e-9), (group, name)


def test_second_evaluation_with_another_metric_reuses_every_feature(tmp_path, sets):
    real, synthetic = sets
    evaluate(config(tmp_path, real, synthetic, metrics=["fd"], by=["fst"], bootstrap=0))
    again = evaluate(config(tmp_path, real, synthetic, metrics=["kid"], by=["class"], bootstrap=0))
    record = again.report["extractors"]["random"]
    assert record["features_extracted"] == 0 and record["features_from_cache"] == 84


def test_small_groups_are_undefined_with_their_sizes(tmp_path, sets):
    real, synthetic = sets
    result = evaluate(config(tmp_path, real, synthetic, by=["fst"], metrics=["fd", "vendi"], min_group_size=10))
    small = rows(result, metric="fd", group_by="fst", group="6")[0]
    assert small["value"] is None and small["undefined"] == "undefined (n = real 8, synthetic 6; fewer than 10 images)"
    assert "ci_low" not in small
    assert rows(result, metric="fd", group="all")[0]["value"] is not None


def test_a_group_with_one_image_is_undefined(tmp_path):
    real = write_set(tmp_path / "real", 12, fst=[1, 1, 1, 1, 1, 6], labels=["a"])
    synthetic = write_set(tmp_path / "synthetic", 11, fst=[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 6], labels=["a"], seed=3)
    result = evaluate(config(tmp_path, real, synthetic, by=["fst"], metrics=["fd", "intra_class_diversity"], min_group_size=2))
    one = rows(result, metric="fd", group="6")[0]
    assert one["value"] is None and "synthetic 1" in one["undefined"]
    diversity = rows(result, metric="intra_class_diversity", group="6", on="synthetic")[0]
    assert diversity["value"] is None and "synthetic 1" in diversity["undefined"]


def test_group_names_that_do_not_match_are_an_error_with_a_hint(tmp_path):
    real = write_set(tmp_path / "real", 12)
    synthetic = write_set(tmp_path / "synthetic", 12, seed=1)
    lines = [json.loads(line) for line in synthetic.read_text().splitlines()]
    for row in lines:
        row["fst_group"] = row["fst_group"].replace("-", "–")  # 'V–VI' with an en dash
    synthetic.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(EvaluationError, match=r"'V–VI' \(real has 'V-VI'\).*allow_unmatched_groups"):
        evaluate(config(tmp_path, real, synthetic, by=["fst_group"], metrics=["fd"]))
    result = evaluate(config(tmp_path, real, synthetic, by=["fst_group"], metrics=["fd"], allow_unmatched_groups=True, min_group_size=2))
    assert any("have no real images" in note for note in result.notes)
    dashed = rows(result, metric="fd", group="V–VI")[0]
    assert dashed["value"] is None and "real 0" in dashed["undefined"]


def test_a_field_missing_from_a_manifest_is_an_error(tmp_path, sets):
    real, synthetic = sets
    with pytest.raises(EvaluationError, match="no 'skin_tone' values"):
        evaluate(config(tmp_path, real, synthetic, by=["skin_tone"], metrics=["fd"]))


def test_mixed_sizes_are_resized_by_the_policy_and_said(tmp_path):
    real = write_set(tmp_path / "real", 12, size=40)
    synthetic = write_set(tmp_path / "synthetic", 12, size=(48, 36), seed=1)
    result = evaluate(config(tmp_path, real, synthetic, by=["class"], metrics=["fd"], min_group_size=2))
    assert result.report["image_sizes"] == {"real": {"40x40": 12}, "synthetic": {"48x36": 12}}
    assert any("come in 2 sizes" in n and "Lanczos" in n for n in result.notes)
    assert any("12 non-square image(s) change aspect ratio" in n for n in result.notes)


def test_memorised_copies_are_found_and_listed_first(tmp_path):
    real = write_set(tmp_path / "real", 30, splits=["train"])
    synthetic = write_set(tmp_path / "synthetic", 20, seed=5, brightness=30)
    for i in range(3):  # three synthetic images are training images
        shutil.copy(real.parent / "images" / f"{i:04d}.png", synthetic.parent / "images" / f"{i:04d}.png")
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(7)
    for i in range(3, 15):  # twelve are training images under more and more noise: near the threshold and past it
        pixels = np.asarray(Image.open(real.parent / "images" / f"{i:04d}.png"), dtype=np.float64)
        noisy = pixels + noise.normal(0, 2.0 * (i - 2), pixels.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(synthetic.parent / "images" / f"{i:04d}.png")
    result = evaluate(config(tmp_path, real, synthetic, by=["class"], metrics=["memorisation"], min_group_size=2))
    share = rows(result, metric="memorisation", value_name="memorised_share", group="all")[0]
    assert share["on"] == "synthetic vs training"
    # recomputed: nearest training image (scikit-learn) on L2-normalised features, closer than the
    # 5th percentile of the training images' distances to their nearest other training image
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from fairsynth.data.preprocess import load_rgb
    from fairsynth.metrics.extractors import create_extractor, prepare_image

    extractor = create_extractor("random")

    def unit_features(manifest) -> np.ndarray:
        paths = [manifest.parent / json.loads(line)["file_name"] for line in manifest.read_text().splitlines()]
        batch = torch.stack([torch.from_numpy(prepare_image(load_rgb(p), (32, 32))).permute(2, 0, 1) for p in paths])
        features = extractor(batch).double().numpy()
        return features / np.linalg.norm(features, axis=1, keepdims=True)

    train, generated = unit_features(real), unit_features(synthetic)
    neighbours = NearestNeighbors(n_neighbors=2).fit(train)
    threshold = np.percentile(neighbours.kneighbors(train)[0][:, 1], 5)
    expected = float(np.mean(neighbours.kneighbors(generated, n_neighbors=1)[0][:, 0] < threshold))
    assert result.report["metrics"]["memorisation@random"]["threshold"] == pytest.approx(threshold, rel=1e-6)  # float32 features
    assert share["value"] == pytest.approx(expected, abs=1e-12) and 3 / 20 < expected < 15 / 20
    worst = result.report["memorisation_worst"]["memorisation@random"][:3]
    assert {(w["synthetic_image"], w["nearest_training_image"]) for w in worst} == {
        (f"images/{i:04d}.png", f"images/{i:04d}.png") for i in range(3)
    }
    assert all(w["distance"] < 1e-6 and w["memorised"] for w in worst)
    assert "rows of split 'train'" in result.report["inputs"]["train"]["chosen_as"]


def test_clip_score_without_captions_is_undefined(tmp_path):
    real = write_set(tmp_path / "real", 12)
    synthetic = write_set(tmp_path / "synthetic", 12, seed=1, captions=False)
    result = evaluate(config(tmp_path, real, synthetic, by=["class"], metrics=["clip_score"], min_group_size=2))
    assert all(r["value"] is None and "no caption" in r["undefined"] for r in rows(result, metric="clip_score"))


def test_a_manifest_path_leaving_its_folder_is_refused(tmp_path, sets):
    real, synthetic = sets
    lines = synthetic.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "file_name": "../real/images/0000.png"})
    synthetic.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnsafePathError):
        evaluate(config(tmp_path, real, synthetic, metrics=["fd"]))


def test_missing_images_are_listed(tmp_path, sets):
    real, synthetic = sets
    (synthetic.parent / "images" / "0003.png").unlink()
    with pytest.raises(EvaluationError, match="1 image.* do not exist.*0003.png"):
        evaluate(config(tmp_path, real, synthetic, metrics=["fd"]))


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown metric 'fidd'"):
        EvaluateConfig(metrics=["fidd"])
    with pytest.raises(ConfigError, match="unknown extractor 'incepton'"):
        EvaluateConfig(metrics=["fd@incepton"])
    with pytest.raises(ConfigError, match="valid: seed"):
        EvaluateConfig(extractor_options={"random": {"size": 3}})
    with pytest.raises(ConfigError, match="min_group_size"):
        EvaluateConfig(min_group_size=1)
    assert EvaluateConfig(metrics=["fd", "fd@dinov2", "kid"]).metric_specs() == [
        ("fd", "dinov2"), ("fd", "inception"), ("kid", "inception")  # FD-DINOv2 leads
    ]
    assert EvaluateConfig(metrics=["fd", "fd@dinov2"], extractor="random").metric_specs() == [("fd", "random")]


def test_recipe_has_an_evaluate_section():
    from fairsynth.recipe import load_recipe

    recipe = load_recipe(None, ["workdir=runs/x", "evaluate.by=[fst_group]", "evaluate.bootstrap=0"])
    assert recipe.evaluate.by == ["fst_group"] and recipe.evaluate.bootstrap == 0
    assert recipe.evaluate.real == "runs/x/prepared/metadata.jsonl"
    assert recipe.evaluate.output == "runs/x/evaluation" and recipe.evaluate.cache_dir == "runs/x/cache"


def test_every_missing_weights_file_is_named_at_once(tmp_path, sets):
    from fairsynth.metrics.extractors import WeightsNotFound

    real, synthetic = sets
    with pytest.raises(WeightsNotFound) as err:
        evaluate(config(tmp_path, real, synthetic, extractor=None, metrics=["fd@inception", "fd@dinov2"]))
    message = str(err.value)
    assert message.startswith("2 extractors need weights")
    assert "pt_inception-2015-12-05-6726825d.pth" in message and "timm_vit_large_patch14_dinov2_lvd142m.safetensors" in message
    assert not (tmp_path / "cache").exists()  # nothing was extracted
