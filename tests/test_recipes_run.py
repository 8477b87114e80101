"""Every shipped recipe runs end to end: `fairsynth run recipes/<name>.yaml` on a tiny base.

Each test builds a small dataset in the recipe's reader format, then runs the shipped recipe
file itself through the command line. The overrides only shrink it (steps, resolution,
images, epochs, seeds, bootstrap) and point it at the tiny data and the tiny random base;
filters that need downloaded weights are left out. The study runs the recipe's own stages but
the report (tested on its own in tests/report). A second identical run must skip every stage.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairsynth.cli import app
from fairsynth.recipe import load_recipe
from fairsynth.study import stages_of
from fairsynth.world.derm import generate_world
from tests.helpers import make_image

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

runner = CliRunner()

#: Every skin type equally often: the tiny datasets must put each type in every split.
EVEN_SKIN_TYPES = {"I": 1, "II": 1, "III": 1, "IV": 1, "V": 1, "VI": 1}

#: Overrides every test shares: filters that need no downloaded weights, a short comparison.
SMALL = [
    "filter.checks=[resolution]", "filter.options={}",  # the random base's images would fail the others
    "downstream.epochs=1", "downstream.seeds=[0]", "downstream.bootstrap_resamples=20", "downstream.image_size=32",
]


def world(folder: Path, n: int) -> Path:
    """A procedural dermatology world in Fitzpatrick17k format; returns its CSV."""
    return generate_world(folder, n=n, size=32, seed=0, fst_distribution=EVEN_SKIN_TYPES).csv


def run_twice(recipe: str, workdir: Path, overrides: list[str]) -> list[str]:
    """Run the shipped recipe's stages (but the report), then the same command again; returns the stages."""
    path = RECIPES / f"{recipe}.yaml"
    overrides = [f"workdir={workdir}", *overrides]
    stages = [stage.name for stage in stages_of(load_recipe(path, overrides)) if stage.name != "report"]
    args = ["run", str(path), *overrides, f"stages=[{','.join(stages)}]"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    state = json.loads((workdir / "run-state.json").read_text())
    assert set(state) == set(stages), state
    assert all(entry["finished"] == entry["started"] for entry in state.values()), state

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("up to date") == len(stages) and "running" not in again.output, again.output
    return stages


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_outputs(workdir: Path, method: str, generated: int, downstream: bool) -> list[dict]:
    """Training, generation and (where the study has it) the comparison left their outputs; returns the generated rows."""
    info = json.loads((workdir / "train" / "model" / "training_info.json").read_text())
    assert info["method"] == method
    rows = read_rows(workdir / "generated" / "metadata.jsonl")
    assert len(rows) == generated
    assert all((workdir / "generated" / row["file_name"]).is_file() for row in rows)
    compare = workdir / "downstream" / "compare.json"
    assert compare.is_file() == downstream
    if downstream:
        result = json.loads(compare.read_text())
        assert result["arms"] == ["real", "mixed", "synthetic"] and result["seeds"] == [0]
    return rows


@pytest.fixture
def tiny_sd(tiny_base) -> list[str]:
    return [f"train.base.source={tiny_base}"]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process (`fairsynth run` trains once per
    process); the recipes differ (fp16, bf16, none), so each test starts and ends with none set."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


# --------------------------------------------------------------------------------------
# One test per recipe
# --------------------------------------------------------------------------------------


def external_test_set(folder: Path, n: int, label_column: str) -> Path:
    """A manifest of another world's images (another seed), as a prepared external test set."""
    frame = pd.read_csv(generate_world(folder, n=n, size=32, seed=1, fst_distribution=EVEN_SKIN_TYPES).csv)
    rows = [{"id": row.md5hash, "file_name": f"images/{row.md5hash}.jpg", "label": getattr(row, label_column),
             "fst": int(row.fitzpatrick_scale)} for row in frame.itertuples() if row.fitzpatrick_scale > 0]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "metadata.jsonl"


def test_fairskin_derm(tmp_path, tiny_sd):
    csv = world(tmp_path / "fitzpatrick17k", n=96)
    ddi = external_test_set(tmp_path / "ddi", n=48, label_column="three_partition_label")
    work = tmp_path / "study"
    stages = run_twice("fairskin_derm", work, [
        f"data.path={csv}", f"downstream.test_sets.ddi={ddi}", *tiny_sd, *SMALL, "prepare.resolution=[32]",
        "train.steps=3",  # one step per pivotal phase (split in the recipe's proportions)
        "train.validation.num_inference_steps=2",
        "generate.plan.total=12", "generate.steps=2",
    ])
    assert stages == ["prepare", "train", "generate", "downstream", "curve", "ablate"]
    rows = assert_outputs(work, "pivotal", generated=12, downstream=True)
    # half of the set on skin types V-VI, and every prompt names the pivotal token it trained
    assert sum(row["fst"] in (5, 6) for row in rows) == 6
    assert all(row["prompt"].startswith(f"<{row['label']}-FST-") for row in rows)
    compare = json.loads((work / "downstream" / "compare.json").read_text())
    assert compare["test_sets"]["ddi"]["images"] == sum(1 for _ in ddi.open())
    # the ratio curve with the recipe's ratios: 12 images run out at the first ratio above 0, and it says so
    curve = json.loads((work / "downstream" / "curve.json").read_text())
    assert curve["ratios"] == [0, 0.25, 0.5, 1, 2, 5, 10] and curve["headline_test_set"] == "ddi"
    assert [p["status"] for p in curve["points"]][:2] == ["run", "short"] and curve["shortfall"]
    assert {p["status"] for p in curve["points"][2:]} == {"not run"}
    # the ablation of the real V-VI images at the recipe's five shares, its headline on DDI
    ablation = json.loads((work / "downstream" / "ablate.json").read_text())
    assert ablation["group"] == "V-VI" and ablation["keep"] == [1, 0.5, 0.25, 0.1, 0]
    assert ablation["headline_test_set"] == "ddi" and ablation["worth"]["sentence"]
    assert "Compared on: 1 seed (0); test set: ddi" in (work / "downstream" / "ablate.md").read_text()


def ham10000(folder: Path, n: int) -> Path:
    """HAM10000 metadata and images/{image_id}.jpg, two photos per lesion, drawn by the procedural world."""
    # the world's scaly red patch stands in for actinic keratosis, so every high-risk class is there
    dx = {"melanoma": "mel", "nevocytic nevus": "nv", "basal cell carcinoma": "bcc", "psoriasis": "akiec"}
    frame = pd.read_csv(world(folder / "world", n))
    (folder / "images").mkdir(parents=True)
    rows = []
    for i, row in enumerate(frame.itertuples()):
        image_id = f"ISIC_{i:07d}"
        shutil.copy(folder / "world" / "images" / f"{row.md5hash}.jpg", folder / "images" / f"{image_id}.jpg")
        rows.append([f"HAM_{i // 2:07d}", image_id, dx[row.label], "histo", 50.0, "female", "back", "vidir_modern"])
    columns = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    csv = folder / "HAM10000_metadata.csv"
    pd.DataFrame(rows, columns=columns).to_csv(csv, index=False)
    return csv


def test_peft_comparison_medical(tmp_path, tiny_sd):
    csv = ham10000(tmp_path / "ham10000", n=96)
    work = tmp_path / "study"
    stages = run_twice("peft_comparison_medical", work, [
        f"data.path={csv}", *tiny_sd, *SMALL, "prepare.resolution=[32]",
        "train.steps=2", "generate.plan.total=8", "generate.steps=2",
    ])
    assert stages == ["prepare", "train", "generate", "downstream"]
    rows = assert_outputs(work, "lora", generated=8, downstream=True)
    # one cell per diagnosis (HAM10000 labels no skin type), each filled to the same count
    assert Counter(row["label"] for row in rows) == {"mel": 2, "nv": 2, "bcc": 2, "akiec": 2}
    # the classifier is judged per skin type estimated from ITA
    groups = pd.read_csv(work / "downstream" / "real" / "seed-0" / "predictions.csv").group
    assert set(groups.astype(str)) <= {"1", "2", "3", "4", "5", "6"} and groups.nunique() > 1


def kohya(folder: Path, n: int) -> Path:
    """kohya concept folders <repeats>_<concept>/ with a .txt caption per image, drawn by the procedural world."""
    frame = pd.read_csv(world(folder / "world", n))
    concepts = {False: ("10_melanoma", "melanoma"), True: ("20_melanoma dark skin", "melanoma on dark skin")}
    data = folder / "derm_lora"
    for row in frame[frame.label == "melanoma"].itertuples():
        dark = row.fitzpatrick_scale >= 5
        name, words = concepts[dark]
        (data / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "world" / "images" / f"{row.md5hash}.jpg", data / name / f"{row.md5hash}.jpg")
        (data / name / f"{row.md5hash}.txt").write_text(f"a dermoscopic photo of {words}, skin type {row.fitzpatrick_scale}")
    return data


def test_kohya_derm_lora(tmp_path, tiny_sd):
    data = kohya(tmp_path / "kohya", n=96)
    work = tmp_path / "study"
    stages = run_twice("kohya_derm_lora", work, [
        f"data.path={data}", *tiny_sd, *SMALL, "prepare.resolution=[32]",
        "train.steps=2", "generate.plan.total=4", "generate.steps=2",
    ])
    assert stages == ["prepare", "train", "generate"]
    rows = assert_outputs(work, "lora", generated=4, downstream=False)
    assert (work / "train" / "model" / "model_kohya.safetensors").is_file()  # the file kohya / A1111 / ComfyUI load
    assert Counter(row["label"] for row in rows) == {"melanoma": 2, "melanoma dark skin": 2}


def mvtec(folder: Path, per_defect: int) -> Path:
    """One MVTec AD category: defect-free train and test images, two defect types with their masks."""
    bottle = folder / "bottle"
    for i in range(per_defect):
        make_image(bottle / "train" / "good" / f"{i:03d}.png", size=48, seed=i)
        make_image(bottle / "test" / "good" / f"{i:03d}.png", size=48, seed=100 + i)
        for k, defect in enumerate(("broken_large", "contamination")):
            make_image(bottle / "test" / defect / f"{i:03d}.png", size=48, seed=200 + 100 * k + i)
            make_image(bottle / "ground_truth" / defect / f"{i:03d}_mask.png", size=48, seed=i, mode="L")
    return bottle


def test_fewshot_defects(tmp_path, tiny_sd):
    data = mvtec(tmp_path / "mvtec", per_defect=10)
    work = tmp_path / "study"
    stages = run_twice("fewshot_defects", work, [
        f"data.path={data}", *tiny_sd, *SMALL, "prepare.resolution=[32]",
        "train.steps=2", "generate.plan.total=6", "generate.steps=2",
    ])
    assert stages == ["prepare", "train", "generate", "downstream"]
    rows = assert_outputs(work, "class_embedding", generated=6, downstream=True)
    # the few defect images train too: the class embedding knows every class and fills each alike
    vocabulary = json.loads((work / "train" / "model" / "class_embedding" / "class_vocab.json").read_text())
    assert vocabulary["factors"][0]["values"] == ["broken_large", "contamination", "good"]
    assert Counter(row["label"] for row in rows) == {"broken_large": 2, "contamination": 2, "good": 2}
    assert all(row["conditioning"] == "class_embedding" for row in rows)
    # no high-risk class is named: the binary task's numbers are undefined, not zero
    table = json.loads((work / "downstream" / "compare.json").read_text())["table"]
    assert table["macro_auroc"]["arms"]["real"]["mean"] is not None
    for name in ("equalized_odds_difference", "demographic_parity_difference", "high_risk_sensitivity"):
        assert table[name]["arms"]["real"]["mean"] is None, name


def garment(folder: Path) -> Path:
    """A Hugging Face imagefolder holding one garment photo and its instance caption."""
    make_image(folder / "jacket.png", size=48, seed=0)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "jacket.png", "text": "a photo of sks jacket"}) + "\n")
    return folder


def test_garment_sdxl(tmp_path, tiny_sdxl_base):
    data = garment(tmp_path / "garment")
    work = tmp_path / "study"
    stages = run_twice("garment_sdxl", work, [
        f"data.path={data}", f"train.base.source={tiny_sdxl_base}", *SMALL,
        "prepare.resolution=[32,48]",  # [width, height]: portrait, as the recipe's [768, 1024]
        "train.steps=2", "train.options.num_class_images=2",
        "generate.plan.total=2", "generate.steps=5",
        f"generate.refiner.source={tiny_sdxl_base}",  # the tiny SDXL pipeline stands in for the refiner
    ])
    assert stages == ["prepare", "train", "generate"]
    rows = assert_outputs(work, "dreambooth", generated=2, downstream=False)
    # prior preservation drew its class images; the refiner took the last fifth of every image
    assert len(list((work / "train" / "method" / "class_images").rglob("*.png"))) == 2
    assert all(row["refiner"] == str(tiny_sdxl_base) and row["refiner_fraction"] == 0.2 for row in rows)
    assert {row["prompt"] for row in rows} == {"a photo of sks jacket worn by a person, full body, studio light"}
    assert {(row["width"], row["height"]) for row in rows} == {(32, 48)}
