"""`generate` in-process on the tiny base: exact counts, the manifest, filtering, shortfall,
re-thresholding without regenerating, and every bad input."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairsynth.generation.run import generate, refilter
from fairsynth.generation.writer import DiskFullError, GenerationError
from tests.generation.conftest import make_recipe


def files_on_disk(output: Path) -> set[str]:
    return {p.relative_to(output).as_posix() for p in output.glob("*/*/*.png")}


def manifest(output: Path, name: str = "metadata.jsonl") -> pd.DataFrame:
    return pd.read_json(output / name, lines=True)


def test_delivers_exact_counts_as_an_imagefolder(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 6})
    result = generate(recipe, progress=False, log=lambda m: None)
    out = Path(recipe.generate.output)
    frame = manifest(out)
    assert len(frame) == 6 and frame["cell"].value_counts().to_dict() == {c.cell.id: 1 for c in result.plan.cells}
    assert set(frame["file_name"]) == files_on_disk(out) and frame["id"].is_unique
    row = frame.iloc[0]
    for column in ("prompt", "negative_prompt", "seed", "scheduler", "steps", "guidance_scale", "base_model",
                   "base_model_sha256", "adapter_sha256", "label", "fst", "fst_group", "seconds", "brightness_mean",
                   "brightness_ok", "resolution_ok"):
        assert column in frame.columns, column
    assert bool(row["synthetic"]) and row["scheduler"] == "ddim" and row["adapter_methods"] == ["lora"]
    assert not result.shortfall and json.loads((out / "report.json").read_text())["delivered"] == 6

    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert loaded.num_rows == 6 and loaded[0]["image"].size == (32, 32)
    assert set(loaded["cell"]) == set(frame["cell"]) and all(loaded["synthetic"])


def test_the_seed_in_the_manifest_regenerates_the_image(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    from fairsynth.generation.pipeline import ImageRequest, load_sampler

    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 2, "batch_size": 2})
    generate(recipe, progress=False, log=lambda m: None)
    out = Path(recipe.generate.output)
    row = manifest(out).iloc[1]
    sampler = load_sampler(recipe.generate)
    (again,) = sampler([ImageRequest(row["prompt"], row["negative_prompt"], int(row["seed"]))], (32, 32))
    stored = np.asarray(Image.open(out / row["file_name"]), dtype=np.int16)
    # alone instead of in a batch of two: equal up to floating-point rounding
    assert np.abs(np.asarray(again, dtype=np.int16) - stored).max() <= 2


def test_filtering_oversampling_shortfall_and_rethresholding(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    impossible = ["filter.options={brightness: {min: 0.98, max: 1.0}}"]
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, *impossible,
                         **{"plan.total": 2, "plan.by": "[]", "plan.oversample": 1.5, "plan.max_attempts": 2.0})
    result = generate(recipe, progress=False, log=lambda m: None)
    out = Path(recipe.generate.output)
    # every image rejected: each class generated up to its cap (2 x 1) and reported short, not padded
    assert result.shortfall == {"melanoma": 1, "psoriasis": 1}
    assert [c.generated for c in result.cells] == [2, 2] and all(c.rejected_by == {"brightness": 2} for c in result.cells)
    assert manifest(out).empty if (out / "metadata.jsonl").stat().st_size else True
    candidates = manifest(out, "candidates.jsonl")
    assert len(candidates) == 4 and not candidates["brightness_ok"].any()
    assert set(candidates["file_name"]) == files_on_disk(out) and all(f.startswith("not_selected/") for f in candidates["file_name"])
    report = json.loads((out / "report.json").read_text())
    assert report["shortfall"] == {"melanoma": 1, "psoriasis": 1}
    hashes = set(candidates["sha256"])

    # re-threshold from the stored values: nothing generated, the first accepted image per class delivered
    relaxed = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 2, "plan.by": "[]", "plan.oversample": 1.5, "plan.max_attempts": 2.0})
    refiltered = refilter(relaxed, log=lambda m: None)
    assert not refiltered.shortfall
    frame = manifest(out)
    assert len(frame) == 2 and list(frame["index"]) == [0, 0] and set(frame["status"]) == {"selected"}
    candidates = manifest(out, "candidates.jsonl")
    assert set(candidates["sha256"]) == hashes and sorted(candidates["status"]) == ["selected", "selected", "surplus", "surplus"]
    assert set(candidates["file_name"]) == files_on_disk(out)


def test_a_rerun_extends_a_finished_set_without_regenerating(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 2, "plan.by": "[]"})
    generate(recipe, progress=False, log=lambda m: None)
    out = Path(recipe.generate.output)
    before = {r["file_name"]: r["sha256"] for _, r in manifest(out).iterrows()}
    bigger = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 4, "plan.by": "[]"})
    result = generate(bigger, progress=False, log=lambda m: None)
    after = {r["file_name"]: r["sha256"] for _, r in manifest(out).iterrows()}
    assert result.generated_now == 2 and len(after) == 4 and all(after[k] == v for k, v in before.items())


def test_unseen_cells_warn_and_bad_inputs_are_clear_errors(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output,
                         **{"plan.total": 2, "plan.distribution": "counts", "plan.counts": "{melanoma/fst=6: 1, melanoma/fst=1: 1}",
                            "plan.values": "{fst: [1, 6]}"})
    messages: list[str] = []
    result = generate(recipe, progress=False, log=messages.append)
    assert any("melanoma/fst=6" in w and "saw no training image" in w for w in result.warnings)
    assert not any("melanoma/fst=1" in w for w in result.warnings)
    assert any(m.startswith("warning:") for m in messages)
    out = Path(recipe.generate.output)

    # images made with other settings
    other = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 2, "steps": 3})
    with pytest.raises(GenerationError, match=r"other settings \(steps: 2 -> 3"):
        generate(other, progress=False, log=lambda m: None)
    # a foreign file
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GenerationError, match="did not write .*notes.txt"):
        generate(recipe, progress=False, log=lambda m: None)
    # an adapter trained for another base
    from fairsynth.models.architectures import build_pipeline, tiny_sd_components

    other_base = tmp_path / "other-base"
    build_pipeline(tiny_sd_components(seed=1)).save_pretrained(other_base)
    mismatch = make_recipe(tmp_path / "w2", other_base, real_manifest, lora_output, **{"plan.total": 2})
    with pytest.raises(GenerationError, match="was trained on base"):
        generate(mismatch, progress=False, log=lambda m: None)
    # no trained output yet
    missing = make_recipe(tmp_path / "w3", tiny_base, real_manifest, tmp_path / "never-trained")
    with pytest.raises(GenerationError, match="does not exist: train one first"):
        generate(missing, progress=False, log=lambda m: None)


def test_a_full_disk_is_a_clear_error_and_a_rerun_completes(tmp_path, tiny_base, real_manifest, lora_output, monkeypatch) -> None:
    import fairsynth.generation.writer as writer

    real_write = writer.atomic_write_bytes
    calls = {"n": 0}

    def filling(path, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output, **{"plan.total": 6})
    monkeypatch.setattr(writer, "atomic_write_bytes", filling)
    with pytest.raises(DiskFullError, match="is full .* 3 images written so far are complete"):
        generate(recipe, progress=False, log=lambda m: None)
    monkeypatch.setattr(writer, "atomic_write_bytes", real_write)
    result = generate(recipe, progress=False, log=lambda m: None)
    out = Path(recipe.generate.output)
    assert result.generated_now == 3 and len(manifest(out)) == 6 and set(manifest(out)["file_name"]) == files_on_disk(out)
