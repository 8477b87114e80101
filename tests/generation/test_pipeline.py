"""Generation features on tiny models: schedulers by name, several adapters, textual-inversion
prompts, class-embedding conditioning, img2img from another group, IP-Adapter files, SDXL refiner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairsynth.generation.config import SCHEDULER_NAMES
from fairsynth.generation.pipeline import ImageRequest, load_sampler
from fairsynth.generation.run import generate
from fairsynth.generation.writer import GenerationError
from tests.generation.conftest import make_recipe, write_trained_output


def quiet(recipe):
    return generate(recipe, progress=False, log=lambda m: None)


def rows(recipe) -> pd.DataFrame:
    return pd.read_json(Path(recipe.generate.output) / "metadata.jsonl", lines=True)


def pixels(sampler, seed: int = 3) -> np.ndarray:
    (image,) = sampler([ImageRequest("a photo of melanoma", "", seed)], (32, 32))
    return np.asarray(image, dtype=np.int16)


def test_schedulers_by_name(tmp_path, tiny_base, real_manifest) -> None:
    outputs = {}
    for name in SCHEDULER_NAMES:
        recipe = make_recipe(tmp_path, tiny_base, real_manifest, None, scheduler=name, steps=4)
        sampler = load_sampler(recipe.generate)
        outputs[name] = pixels(sampler)
        assert type(sampler.pipe.scheduler).__name__ == {
            "ddim": "DDIMScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
            "euler_ancestral": "EulerAncestralDiscreteScheduler", "unipc": "UniPCMultistepScheduler",
        }[name]
    assert sampler.pipe.scheduler.config.num_train_timesteps == 1000  # the base's noise schedule carried over
    assert len({o.tobytes() for o in outputs.values()}) == len(SCHEDULER_NAMES)


def test_several_adapters_at_their_scales(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    second = write_trained_output(tmp_path / "second" / "train", tiny_base, real_manifest, rank=2, targets="cross_attention")
    one = make_recipe(tmp_path, tiny_base, real_manifest, lora_output)
    both = make_recipe(tmp_path, tiny_base, real_manifest, lora_output,
                       f"generate.adapters=[{{path: {lora_output / 'model'}}}, {{path: {second}, scale: 0.5}}]")
    off = make_recipe(tmp_path, tiny_base, real_manifest, lora_output,
                      f"generate.adapters=[{{path: {lora_output / 'model'}}}, {{path: {second}, scale: 0.0}}]")
    sampler = load_sampler(both.generate)
    assert sampler.pipe.get_active_adapters() == ["adapter0", "adapter1"]
    single = pixels(load_sampler(one.generate))
    assert np.abs(pixels(sampler) - single).max() > 2
    assert np.abs(pixels(load_sampler(off.generate)) - single).max() <= 1  # scale 0: the second adds nothing


def test_textual_inversion_tokens_are_expanded_in_prompts(tmp_path, tiny_base, real_manifest) -> None:
    output = tmp_path / "ti" / "train"
    write_trained_output(output, tiny_base, real_manifest, method="textual_inversion", num_vectors=2)
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, output, "generate.prompt='a photo of {token}'",
                         **{"plan.total": 2, "plan.by": "[fst]", "plan.values": "{fst: [1]}"})
    quiet(recipe)
    frame = rows(recipe)
    assert list(frame["caption"]) == ["a photo of <melanoma-FST-I>", "a photo of <psoriasis-FST-I>"]
    assert list(frame["prompt"]) == ["a photo of <melanoma-FST-I> <melanoma-FST-I>_1", "a photo of <psoriasis-FST-I> <psoriasis-FST-I>_1"]


def test_class_embedding_conditions_through_prompt_embeds(tmp_path, tiny_base, real_manifest) -> None:
    output = tmp_path / "ce" / "train"
    write_trained_output(output, tiny_base, real_manifest, method="class_embedding", attributes=["fst"])
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, output, **{"plan.total": 2, "plan.values": "{fst: [2]}"})
    quiet(recipe)
    frame = rows(recipe)
    assert set(frame["conditioning"]) == {"class_embedding"} and set(frame["prompt"]) == {""}
    assert sorted(frame["label"]) == ["melanoma", "psoriasis"]
    # The conditioning carries the class and the skin type: images with the same seed that differ
    # only by class (or only by skin type) differ; the same class, type and seed draws the same image.
    sampler = load_sampler(recipe.generate)

    def draw(label: str, fst: int) -> np.ndarray:
        (image,) = sampler([ImageRequest("", "", 3, label=label, attributes={"fst": fst})], (32, 32))
        return np.asarray(image, dtype=np.int16)

    melanoma = draw("melanoma", 2)
    assert np.array_equal(draw("melanoma", 2), melanoma)  # deterministic: any difference below is the conditioning's
    assert np.abs(draw("psoriasis", 2) - melanoma).max() > 2
    assert not np.array_equal(draw("melanoma", 1), melanoma)  # the untrained skin-type rows move few pixels
    unknown = make_recipe(tmp_path / "w2", tiny_base, real_manifest, output, **{"plan.total": 2, "plan.values": "{fst: [6]}"})
    with pytest.raises(GenerationError, match="knows no fst '6'|knows no fst 6"):
        quiet(unknown)


def test_img2img_from_real_images_of_another_group(tmp_path, tiny_base, real_manifest, lora_output) -> None:
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, lora_output,
                         "generate.img2img={enabled: true, source: {fst: [1]}, strength: 0.5}",
                         **{"plan.total": 2, "plan.values": "{fst: [3]}", "steps": 4, "guidance_scale": 3.0})
    quiet(recipe)
    frame = rows(recipe)
    real = pd.read_json(real_manifest, lines=True).set_index("file_name")
    assert set(frame["mode"]) == {"img2img"} and set(frame["fst"]) == {3}
    for _, row in frame.iterrows():
        assert real.loc[row["source_image"], "fst"] == 1 and real.loc[row["source_image"], "label"] == row["label"]
    assert set(frame["unet_evaluations"]) == {4}  # 4 steps x strength 0.5, twice with guidance
    empty = make_recipe(tmp_path / "w2", tiny_base, real_manifest, lora_output,
                        "generate.img2img={enabled: true, source: {fst: [6]}}", **{"plan.total": 2})
    with pytest.raises(GenerationError, match="no real image .* to use as img2img source"):
        quiet(empty)


def test_img2img_sources_come_from_the_training_split_only(tmp_path, tiny_base, lora_output) -> None:
    # Four images: skin type 1 in training, skin type 2 only in validation. A validation (or
    # test) image must never shape a synthetic training image, so type 2 has no source.
    from tests.generation.conftest import make_real

    real = make_real(tmp_path / "real", n=4, fsts=(1, 1, 2, 2))
    assert [r["split"] for r in pd.read_json(real, lines=True).to_dict("records")] == ["train", "train", "val", "val"]
    recipe = make_recipe(tmp_path, tiny_base, real, lora_output,
                         "generate.img2img={enabled: true, source: {fst: [2]}}", **{"plan.total": 2, "plan.values": "{fst: [3]}"})
    with pytest.raises(GenerationError, match=r"no real image .* \(split train\) to use as img2img source"):
        quiet(recipe)


def test_ip_adapter_weights_missing_offline_name_the_file(tmp_path, tiny_base, real_manifest) -> None:
    folder = tmp_path / "IP-Adapter"
    (folder / "models").mkdir(parents=True)
    recipe = make_recipe(tmp_path, tiny_base, real_manifest, None, f"generate.ip_adapter={{path: {folder}}}")
    with pytest.raises(GenerationError, match=r"missing on this machine: .*models/ip-adapter_sd15.safetensors"):
        load_sampler(recipe.generate)


def test_sdxl_refiner_takes_over_at_the_refine_fraction(tmp_path, real_manifest) -> None:
    from fairsynth.models.architectures import build_pipeline, tiny_sdxl_components

    base = tmp_path / "tiny-sdxl"
    build_pipeline(tiny_sdxl_components(seed=0)).save_pretrained(base)
    recipe = make_recipe(tmp_path, base, real_manifest, None, f"generate.refiner={{source: {base}, fraction: 0.25}}",
                         **{"plan.total": 1, "plan.by": "[]", "plan.classes": "[melanoma]", "steps": 4})
    sampler = load_sampler(recipe.generate)
    calls = {"base": 0, "refiner": 0}
    sampler.pipe.unet.register_forward_hook(lambda *a: calls.__setitem__("base", calls["base"] + 1))
    sampler.refiner.unet.register_forward_hook(lambda *a: calls.__setitem__("refiner", calls["refiner"] + 1))
    (image,) = sampler([ImageRequest("a photo of a jacket", "", 0)], (32, 32))
    assert image.size == (32, 32) and calls == {"base": 3, "refiner": 1}  # 4 steps: 0.75 base, 0.25 refiner
    assert sampler.refiner.text_encoder_2 is sampler.pipe.text_encoder_2  # shared, not loaded twice
    quiet(recipe)
    assert rows(recipe).iloc[0]["refiner_fraction"] == 0.25
