"""`generate:` — what synthetic set to make, from which model, and how to sample it.

    generate:
      plan:
        total: 60000
        distribution: fairskin     # FST I 10 %, II 10 %, III 15 %, IV 15 %, V 25 %, VI 25 %, split across diagnoses
        oversample: 1.5            # generate 1.5x, so that filtering still meets every target
      scheduler: dpmsolver++       # ddim, dpmsolver++, euler_ancestral, unipc
      steps: 25
      guidance_scale: 7.5
      batch_size: 8
      adapters: [{path: runs/fairskin_derm/train/model, scale: 1.0}]   # default: <train.output>/model

Run with ``fairsynth generate --config recipe.yaml`` (``--dry-run`` prints the plan). Folders
and the base model left empty are derived from the recipe (see :class:`~fairsynth.recipe.Recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fairsynth.config import ConfigError, knob
from fairsynth.models.loading import BaseModelConfig

#: Named target distributions: (field, share per value). Keys may be Roman ranges for fst.
NAMED_DISTRIBUTIONS: dict[str, tuple[str, dict[str, float]]] = {
    # FairSkin's generation plan: half of the images on FST V-VI.
    "fairskin": ("fst", {"I": 0.10, "II": 0.10, "III": 0.15, "IV": 0.15, "V": 0.25, "VI": 0.25}),
}
DISTRIBUTIONS = ("counts", "uniform", "match_real", "inverse_frequency", "shares", *NAMED_DISTRIBUTIONS)
SCHEDULER_NAMES = ("ddim", "dpmsolver++", "euler_ancestral", "unipc")


@dataclass
class AdapterSpec:
    """One trained output to generate with (several combine: LoRAs add up at their scales)."""

    path: str = knob("", "A `fairsynth train` model folder (<train.output>/model) or a method's export folder.")
    method: str | None = knob(None, "The method that wrote the folder; None: read from its config.yaml (train.method).")
    scale: float = knob(1.0, "Strength of a LoRA / DoRA (0: off, 1: as trained); other methods take 1 only.")

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ConfigError("generate.adapters: every adapter needs a path")


@dataclass
class PlanConfig:
    """How many images of each cell (class x attributes) to deliver."""

    total: int = knob(100, "Images to deliver in all (after filtering); ignored by `counts` unless given (then checked).")
    distribution: str = knob(
        "uniform", "counts (explicit per cell), uniform, match_real (as the real data), inverse_frequency "
        "(rare cells get more), shares (per value of `shares_by`), or a named one: fairskin."
    )
    by: list[str] = knob(["fst"], "Attributes that, with the class label, make the cells ([] : one cell per class).")
    classes: list[str] = knob([], "Classes to generate; empty: every label of the real data.")
    values: dict[str, list[Any]] = knob(
        {}, "Values per attribute of `by`, e.g. {fst: [1, 2, 3, 4, 5, 6]}; default: those of the real data "
        "(and, for fst, every type a share names)."
    )
    counts: dict[str, int] = knob({}, "For `counts`: images per cell id, e.g. {'melanoma/fst=6': 500} (`--dry-run` lists ids).")
    shares: dict[str, float] = knob(
        {}, "For `shares`: share per value of `shares_by`; fst keys may be Roman ranges ({'I-II': 0.2, 'V-VI': 0.5}). "
        "Each share is split evenly across the cells (e.g. diagnoses) with that value."
    )
    shares_by: str = knob("fst", "Field the shares are over (`label` for classes).")
    oversample: float = knob(1.0, "Generate this many candidates per target image at first (1.5: 50 % more), for filtering.")
    max_attempts: float = knob(
        3.0, "Most candidates per target image of a cell; a cell that still falls short is reported, never padded."
    )
    real_split: str | None = knob("train", "Split of the real manifest counted by match_real / inverse_frequency; None: every row.")

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"generate.plan.distribution: unknown {self.distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")
        if self.total < 0:
            raise ConfigError(f"generate.plan.total must be >= 0, got {self.total}")
        if self.oversample < 1.0:
            raise ConfigError(f"generate.plan.oversample must be >= 1, got {self.oversample}")
        if self.max_attempts < self.oversample:
            raise ConfigError(
                f"generate.plan.max_attempts ({self.max_attempts}) must be >= oversample ({self.oversample})"
            )
        bad = {k: v for k, v in self.counts.items() if v < 0}
        if bad:
            raise ConfigError(f"generate.plan.counts must be >= 0, got {bad}")
        if any(v < 0 for v in self.shares.values()):
            raise ConfigError(f"generate.plan.shares must be >= 0, got {self.shares}")
        if self.distribution == "counts" and not self.counts:
            raise ConfigError("generate.plan.distribution is 'counts' but generate.plan.counts is empty")
        if self.distribution == "shares" and not self.shares:
            raise ConfigError("generate.plan.distribution is 'shares' but generate.plan.shares is empty")
        if self.distribution not in ("counts", "shares") and (self.counts or self.shares):
            raise ConfigError(
                f"generate.plan.counts/shares are set but distribution is {self.distribution!r}; "
                "use distribution: counts or shares"
            )


@dataclass
class Img2ImgConfig:
    """Start from real images of another group ("majority to minority"), the target attribute in the prompt."""

    enabled: bool = knob(False, "Generate by img2img from real images instead of from noise.")
    source: dict[str, list[Any]] = knob(
        {}, "Which real images to start from, as field -> values, e.g. {fst: [1, 2, 3]} (light skin, to be "
        "turned into the cell's skin type by the prompt)."
    )
    same: list[str] = knob(["label"], "Fields a source image must share with the cell (its class by default).")
    strength: float = knob(0.6, "How much of the denoising is redone: 0.5-0.75 keeps the lesion and changes the skin.")

    def __post_init__(self) -> None:
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"generate.img2img.strength must be in (0, 1], got {self.strength}")


@dataclass
class IPAdapterConfig:
    """Reference-image conditioning (IP-Adapter, Ye et al. 2023) through diffusers' load_ip_adapter."""

    path: str = knob("", "Folder (or cached hub id, e.g. h94/IP-Adapter) with the IP-Adapter weights; empty: off.")
    subfolder: str = knob("models", "Subfolder of `path` holding the weights file.")
    weight_name: str = knob("ip-adapter_sd15.safetensors", "Weights file (SDXL: ip-adapter_sdxl.safetensors in sdxl_models).")
    image_encoder: str = knob("models/image_encoder", "CLIP vision encoder folder, relative to `path`.")
    scale: float = knob(0.6, "How strongly the reference image steers the image (0-1).")
    same: list[str] = knob(["label", "fst"], "Reference images: real images sharing these fields with the cell.")

    @property
    def enabled(self) -> bool:
        return bool(self.path)


@dataclass
class RefinerConfig:
    """SDXL refiner: the base denoises the first part, the refiner the last ``fraction``."""

    source: str = knob("", "SDXL refiner: a diffusers folder or cached hub id (stabilityai/stable-diffusion-xl-refiner-1.0); empty: none.")
    fraction: float = knob(0.2, "Share of the denoising done by the refiner (the garment study: 0.2).")

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"generate.refiner.fraction must be in (0, 1), got {self.fraction}")


@dataclass
class GenerateConfig:
    """`fairsynth generate`: a balanced synthetic set, filtered, resumable and sharded."""

    output: str = knob("", "Output folder (imagefolder: images/ + metadata.jsonl); default <workdir>/generated.")
    real: str = knob("", "Manifest of the real images (match_real, img2img sources, references); default <prepare.output>/metadata.jsonl.")
    base: BaseModelConfig | None = knob(None, "The base model; default train.base.")
    adapters: list[AdapterSpec] | None = knob(
        None, "Trained outputs to generate with; default [<train.output>/model]; [] : the base model alone."
    )
    check_base_hash: bool = knob(True, "Refuse an adapter whose training_info.json names other base weights than generate.base.")
    plan: PlanConfig = knob(default_factory=PlanConfig, help="Cells and target counts.")
    prompt: str = knob(
        "", "Prompt template filled per cell ({label}, {diagnosis}, {fst}, {fst_roman}, {fst_group}, {token}, any "
        "attribute); default data.caption_template, else 'a photo of {label}'."
    )
    negative_prompt: str = knob("", "Negative prompt (the unconditional branch of guidance).")
    scheduler: Literal["ddim", "dpmsolver++", "euler_ancestral", "unipc"] = knob(
        "dpmsolver++", "Sampler: ddim, dpmsolver++ (multistep, 20-25 steps suffice), euler_ancestral, unipc."
    )
    steps: int = knob(25, "Denoising steps per image (img2img runs steps x strength of them).")
    guidance_scale: float = knob(7.5, "Classifier-free guidance scale (img2img from real images: low, e.g. 3-5).")
    resolution: list[int] = knob([], "Size: [side] or [width, height], multiples of 8; default train.resolution.")
    batch_size: int = knob(4, "Images per pipeline call (and per process).")
    seed: int | None = knob(None, "Run seed; image i of a cell gets a seed derived from (seed, cell, i). Default: the recipe's.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = knob(
        "auto", "Inference precision; auto: float16 on CUDA, float32 on CPU."
    )
    device: str = knob("auto", "Torch device; auto: cuda:<process> when there is a GPU, else cpu.")
    img2img: Img2ImgConfig = knob(default_factory=Img2ImgConfig, help="img2img from real images of another group.")
    ip_adapter: IPAdapterConfig = knob(default_factory=IPAdapterConfig, help="Reference-image conditioning.")
    refiner: RefinerConfig = knob(default_factory=RefinerConfig, help="SDXL refiner.")
    seconds_per_unet_eval: float | None = knob(
        None, "For --dry-run's time estimate when no run has measured it yet (a run records it in report.json)."
    )

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"generate.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"generate.batch_size must be >= 1, got {self.batch_size}")
        if self.guidance_scale < 0:
            raise ConfigError(f"generate.guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.resolution and len(self.resolution) not in (1, 2):
            raise ConfigError(f"generate.resolution must be [side] or [width, height], got {self.resolution}")
        for side in self.resolution:
            if side <= 0 or side % 8:
                raise ConfigError(f"generate.resolution sides must be positive multiples of 8, got {side}")
        if self.img2img.enabled and self.refiner.source:
            raise ConfigError("generate.img2img and generate.refiner cannot be combined")
        if self.img2img.enabled and not self.img2img.source:
            raise ConfigError("generate.img2img.source must say which real images to start from, e.g. {fst: [1, 2, 3]}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height); needs ``resolution`` (the recipe fills it from train.resolution)."""
        if not self.resolution:
            raise ConfigError("generate.resolution is empty; set it or load the config through a recipe")
        return (self.resolution[0], self.resolution[-1])
