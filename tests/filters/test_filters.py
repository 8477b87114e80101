"""Each check's value against a reference computation, its verdict, and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from fairsynth.config import ConfigError
from fairsynth.data.skin import lab_to_srgb
from fairsynth.filters import FILTERS
from fairsynth.filters.apply import judge, measure_images, select
from fairsynth.filters.config import FilterConfig
from fairsynth.filters.context import FilterContext
from fairsynth.io import sha256_file


@pytest.fixture(autouse=True)
def one_thread_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FAIRSYNTH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def noise(seed: int, size: int = 48, mean: float = 128, spread: float = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.normal(mean, spread, (size, size, 3)).clip(0, 255).astype(np.uint8))


def check(name: str, **options):
    cls = FILTERS.get(name)
    return cls(cls.Config(**options))


def test_registry_lists_every_check_and_ls_shows_them() -> None:
    assert {"resolution", "brightness", "sharpness", "skin_type", "realism", "memorisation", "near_duplicates"} <= set(FILTERS.names())
    from typer.testing import CliRunner

    from fairsynth.cli import app

    listed = CliRunner().invoke(app, ["ls", "filters"])
    assert listed.exit_code == 0 and "near_duplicates" in listed.stdout and "memorisation" in listed.stdout


def test_brightness_is_the_mean_luma_and_judged_in_its_band() -> None:
    # a green-heavy image, where ITU-R 601 luma (0.52), Rec. 709 luma (0.60) and the mean of
    # the channels (0.38) are far apart; PIL rounds each pixel's luma, which moves the mean of
    # 2,304 pixels by far less than the tolerance
    rng = np.random.default_rng(0)
    image = Image.fromarray((np.array([30, 200, 60]) + rng.normal(0, 20, (48, 48, 3))).clip(0, 255).astype(np.uint8))
    rgb = np.asarray(image, dtype=np.float64)
    reference = (rgb @ np.array([0.299, 0.587, 0.114])).mean() / 255.0
    brightness = check("brightness")
    (values,) = brightness.measure([image], [{}], None)
    assert values["brightness_mean"] == pytest.approx(reference, abs=0.05 / 255)
    for colour, luma in (((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29)):  # round(255 x weight)
        (pure,) = brightness.measure([Image.new("RGB", (8, 8), colour)], [{}], None)
        assert pure["brightness_mean"] == pytest.approx(luma / 255, abs=1e-12), colour
    assert brightness.passes(values, {}) is True
    (dark,) = brightness.measure([Image.new("RGB", (8, 8), (5, 5, 5))], [{}], None)
    assert brightness.passes(dark, {}) is False
    with pytest.raises(ConfigError):
        FILTERS.get("brightness").Config(min=0.8, max=0.2)


def test_sharpness_matches_scipy_and_rejects_blur() -> None:
    from scipy import ndimage

    image = noise(1)
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    reference = ndimage.laplace(gray, mode="mirror").var()  # OpenCV's default border is reflect-101
    sharpness = check("sharpness", min_variance=100.0)
    (values,) = sharpness.measure([image], [{}], None)
    assert values["sharpness_laplacian_var"] == pytest.approx(reference, rel=1e-9)
    (blurred,) = sharpness.measure([image.filter(ImageFilter.GaussianBlur(4))], [{}], None)
    assert blurred["sharpness_laplacian_var"] < values["sharpness_laplacian_var"] / 20
    assert sharpness.passes(values, {}) is True and sharpness.passes(blurred, {}) is False


def test_resolution_defaults_to_the_requested_size() -> None:
    resolution = check("resolution")
    (values,) = resolution.measure([Image.new("RGB", (32, 24))], [{}], None)
    assert values == {"resolution_width": 32, "resolution_height": 24}
    assert resolution.passes(values, {"width": 32, "height": 24}) is True
    assert resolution.passes(values, {"width": 32, "height": 32}) is False
    assert check("resolution", min_width=16, min_height=16).passes(values, {"width": 64, "height": 64}) is True


def test_skin_type_agreement_uses_ita_of_the_skin_region() -> None:
    # L* = 70, b* = 15: ITA = atan2(20, 15) = 53.1 degrees, FST II (41 < ITA <= 55)
    colour = (lab_to_srgb(np.array([70.0, 8.0, 15.0])) * 255).round().astype(np.uint8)
    image = Image.fromarray(np.tile(colour, (40, 40, 1)))
    skin = check("skin_type")
    (values,) = skin.measure([image], [{}], None)
    assert values["skin_type_ita"] == pytest.approx(53.13, abs=0.5) and values["skin_type_fst_estimate"] == 2
    assert skin.passes(values, {"fst": 3}) is True  # within one type
    assert skin.passes(values, {"fst": 5}) is False
    assert skin.passes(values, {"fst": None}) is None  # a cell without a skin type is not judged
    assert check("skin_type", tolerance=0).passes(values, {"fst": 3}) is False


def write_images(root: Path, images: list[Image.Image], fsts: list[int]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, fst) in enumerate(zip(images, fsts)):
        image.save(root / f"images/{i}.png")
        rows.append({"file_name": f"images/{i}.png", "id": str(i), "label": "melanoma", "fst": fst, "split": "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "metadata.jsonl"


@pytest.fixture
def context(tmp_path):
    reals = [noise(10 + i, mean=150 - 10 * (i % 3)) for i in range(9)]
    manifest = write_images(tmp_path / "real", reals, [1, 2, 3] * 3)
    cfg = FilterConfig(
        checks=["realism", "memorisation", "near_duplicates"], real=str(manifest), train=str(manifest),
        extractor="random", cache_dir=str(tmp_path / "cache"), device="cpu",
    )
    return FilterContext(cfg), reals, manifest


def rows_for(images: list[Image.Image], folder: Path, fst: int = 1) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        path = folder / f"s{i}.png"
        image.save(path)
        rows.append({"id": f"s{i}", "cell": "melanoma/fst=1", "index": i, "label": "melanoma", "fst": fst,
                     "sha256": sha256_file(path), "_path": str(path), "width": 48, "height": 48})
    return rows


def test_memorisation_rejects_a_copy_and_names_the_training_image(context, tmp_path) -> None:
    ctx, reals, _ = context
    memorisation = check("memorisation", extractor="dinov2", lpips_extractor="lpips")  # both replaced by `random`
    memorisation.setup(ctx)
    images = [reals[4].copy(), Image.new("RGB", (48, 48), (20, 40, 220))]
    rows = rows_for(images, tmp_path / "synthetic")
    copy, other = memorisation.measure(images, rows, ctx)
    assert copy["memorisation_distance"] == pytest.approx(0.0, abs=1e-6) and copy["memorisation_percentile"] == 0.0
    assert copy["memorisation_nearest"] == "images/4.png" and copy["memorisation_lpips"] == pytest.approx(0.0, abs=1e-9)
    assert memorisation.passes(copy, rows[0]) is False
    assert other["memorisation_percentile"] == 100.0 and memorisation.passes(other, rows[1]) is True
    assert any("random weights" in w for w in ctx.warnings)  # a test-only extractor is always labelled


def test_realism_compares_with_real_images_of_the_same_group(context, tmp_path) -> None:
    ctx, reals, _ = context
    realism = check("realism", k=2, max_nn_percentile=95.0, max_lpips=1e9)
    realism.setup(ctx)
    images = [reals[0].copy(), Image.new("RGB", (48, 48), (20, 40, 220)), reals[1].copy()]
    rows = rows_for(images, tmp_path / "synthetic")
    rows[2]["fst"] = 5  # no real image of FST V
    close, far, unjudged = realism.measure(images, rows, ctx)
    assert close["realism_references"] == 3 and close["realism_nn_distance"] == pytest.approx(0.0, abs=1e-6)
    assert realism.passes(close, rows[0]) is True
    assert far["realism_nn_percentile"] == 100.0 and realism.passes(far, rows[1]) is False
    # LPIPS is the squared distance of the embeddings (here the random extractor's, which the
    # context puts in place of every extractor), averaged over the k = 2 nearest real images
    # of the group (FST I: real images 0, 3 and 6); the nearest-real distance is on unit features.
    from fairsynth.metrics.extractors import create_extractor, prepare_image

    extractor = create_extractor("random")
    embed = lambda pictures: extractor(torch.from_numpy(np.stack(  # noqa: E731
        [prepare_image(p.convert("RGB"), extractor.input_size) for p in pictures])).permute(0, 3, 1, 2)).double()
    group = embed([reals[0], reals[3], reals[6]])
    for values, image in ((close, images[0]), (far, images[1])):
        squared = ((embed([image]) - group) ** 2).sum(dim=1)
        assert values["realism_lpips"] == pytest.approx(float(squared.sort().values[:2].mean()), rel=1e-5, abs=1e-9)
        unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
        nearest = (unit(embed([image])) - unit(group)).norm(dim=1).min()
        assert values["realism_nn_distance"] == pytest.approx(float(nearest), rel=1e-5, abs=1e-6)
    assert close["realism_lpips"] > 0  # the copy's second-nearest image is another one
    assert unjudged["realism_references"] == 0 and realism.passes(unjudged, rows[2]) is None
    assert any("no real image of group" in w for w in ctx.warnings)


def test_near_duplicates_keep_the_first_of_a_group(context, tmp_path) -> None:
    ctx, _, _ = context
    near = check("near_duplicates", max_cosine=0.999)
    brightness = check("brightness", min=0.0, max=1.0)
    first, other = noise(3), Image.new("RGB", (48, 48), (20, 40, 220))
    images = [first, first.copy(), other, first.copy()]
    rows = rows_for(images, tmp_path / "synthetic")
    for row, values in zip(rows, measure_images([brightness, near], images, rows, ctx)):
        row.update(values)
    judged = judge([brightness, near], rows, ctx)
    assert [r["near_duplicates_ok"] for r in judged] == [True, False, True, False]
    assert judged[1]["near_duplicates_of"] == "s0" and judged[1]["near_duplicates_cosine"] > 0.999
    assert [r["rejected_by"] for r in judged] == ["", "near_duplicates", "", "near_duplicates"]
    selected = select(judged, {"melanoma/fst=1": 1})
    assert [r["status"] for r in selected] == ["selected", "rejected", "surplus", "rejected"]


def test_filter_config_checks_names_and_options() -> None:
    cfg = FilterConfig(checks=["brightness"], options={"brightness": {"min": 0.2}})
    assert cfg.options == {"brightness": {"min": 0.2, "max": 0.9}}  # saved resolved
    with pytest.raises(ConfigError, match="unknown check 'blurry'"):
        FilterConfig(checks=["blurry"])
    with pytest.raises(ConfigError, match="does not run"):
        FilterConfig(checks=["brightness"], options={"sharpness": {"min_variance": 3}})
    with pytest.raises(ConfigError, match="unknown key"):
        FilterConfig(checks=["sharpness"], options={"sharpness": {"threshold": 3}})


def test_missing_extractor_weights_fail_before_anything_is_generated(tmp_path) -> None:
    from fairsynth.metrics.extractors import WeightsNotFound

    manifest = write_images(tmp_path / "real", [noise(i) for i in range(3)], [1, 2, 3])
    cfg = FilterConfig(checks=["near_duplicates"], real=str(manifest), download=False, cache_dir=str(tmp_path / "c"), device="cpu")
    with pytest.raises(WeightsNotFound):
        cfg.build()[0].setup(FilterContext(cfg))
