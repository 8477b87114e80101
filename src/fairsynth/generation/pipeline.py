"""A diffusers pipeline for generation: the base, the trained outputs, the sampler settings.

    sampler = load_sampler(cfg, device="cuda:0")
    images = sampler([ImageRequest(prompt, "", seed, "melanoma", {"fst": 6})], size=(512, 512))

:func:`load_sampler` loads the base model (:func:`fairsynth.models.loading.load_base`), checks
each trained output was trained on these very weights (the base sha256 in its
``training_info.json``), and hands each output to its method's
:meth:`~fairsynth.methods.base.Method.load_for_inference` hook: LoRAs become named diffusers
adapters activated together at their scales (``set_adapters``), textual-inversion tokens are
loaded and expanded in prompts, class-embedding outputs replace the prompt by
``prompt_embeds`` / ``negative_prompt_embeds``. Then the scheduler by name, IP-Adapter
reference conditioning (``load_ip_adapter``, offline files only), the device and precision
(float16 / bfloat16 on GPUs; diffusers' attention is PyTorch SDPA, ``AttnProcessor2_0``), and
an SDXL refiner taking over for the last ``refiner.fraction`` of the denoising
(``denoising_end`` / ``denoising_start``). img2img reuses the same components
(``AutoPipelineForImage2Image.from_pipe``), so no weight is loaded twice.

Every image draws its initial noise (and img2img its VAE sample) from its own CPU generator
seeded by the plan, so an image does not depend on the others of its batch beyond
floating-point rounding, nor on the device the noise is moved to.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from fairsynth.config import ConfigError, from_dict
from fairsynth.generation.config import AdapterSpec, GenerateConfig
from fairsynth.generation.writer import GenerationError
from fairsynth.methods.base import InferenceAdapter, MethodError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_scheduler(name: str, config: Any) -> Any:
    """A sampler by name with the base model's noise schedule (betas, timesteps, prediction type)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, UniPCMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpmsolver++":  # Lu et al. 2022, second-order multistep
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "euler_ancestral":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise ConfigError(f"unknown scheduler {name!r}; choose ddim, dpmsolver++, euler_ancestral or unipc")


# --------------------------------------------------------------------------------------
# Trained outputs
# --------------------------------------------------------------------------------------


@dataclass
class TrainedOutput:
    """What is known about one trained output folder before anything is loaded."""

    spec: AdapterSpec
    folder: Path
    method: str
    options: dict[str, Any]
    #: training_info.json (None for a bare export folder).
    info: dict[str, Any] | None
    #: The train section of the folder's config.yaml (None for a bare export folder).
    train: dict[str, Any] | None
    sha256: str

    @property
    def base_sha256(self) -> str | None:
        return ((self.info or {}).get("base_model") or {}).get("sha256")

    @property
    def base_source(self) -> str | None:
        return ((self.info or {}).get("base_model") or {}).get("source")

    def build_method(self) -> Any:
        from fairsynth.methods import METHODS

        method_class = METHODS.get(self.method)
        return method_class(from_dict(method_class.Config, dict(self.options), f"{self.folder}/config.yaml train.options"))


def read_trained_output(spec: AdapterSpec) -> TrainedOutput:
    """The method, options and training record of a `fairsynth train` model folder (or a bare export)."""
    from fairsynth.methods import METHODS
    from fairsynth.models.loading import model_hash

    folder = Path(spec.path).expanduser()
    if not folder.is_dir():
        raise GenerationError(
            f"adapter folder {folder} does not exist: train one first (`fairsynth train --config ...` writes "
            "<train.output>/model), or set generate.adapters ([] generates with the base model alone)"
        )
    train: dict[str, Any] | None = None
    config_file = folder / "config.yaml"
    if config_file.is_file():
        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        train = loaded.get("train") if isinstance(loaded, dict) else None
    info_file = folder / "training_info.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else None
    method = spec.method or (train or {}).get("method")
    if not method:
        raise GenerationError(f"{folder} has no config.yaml naming its method; set generate.adapters[].method")
    if method not in METHODS:
        raise GenerationError(f"{folder}: unknown method {method!r}; available: {', '.join(METHODS.names())}")
    options = dict((train or {}).get("options") or {}) if (train or {}).get("method") == method else {}
    try:
        digest = model_hash(folder)
    except FileNotFoundError:
        raise GenerationError(f"{folder} holds no weight files (.safetensors): not a trained output") from None
    _check_weight_files(folder)
    return TrainedOutput(spec, folder, method, options, info, train, digest)


def _check_weight_files(folder: Path) -> None:
    """Every safetensors file of a trained output reads whole (a header that promises more bytes
    than the file holds is a copy cut short); the error names the file, before any model loads."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise GenerationError(
                f"{path} cannot be read ({err}): the file is damaged or was cut short. Export it again from the "
                "training run (`fairsynth train --config ... --resume latest` writes the model folder again from its "
                "latest checkpoint) or point generate.adapters at a whole copy"
            ) from None


# --------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------


@dataclass
class ImageRequest:
    """One image to make: its prompt, its seed, its cell, and img2img / IP-Adapter inputs."""

    prompt: str
    negative_prompt: str
    seed: int
    label: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: Image.Image | None = None  # img2img start image, already at the output size
    reference: Image.Image | None = None  # IP-Adapter reference image
    reference_key: str | None = None  # identifies the reference (requests sharing it share a call)


@dataclass
class Sampler:
    """A loaded pipeline and the settings every call uses."""

    cfg: GenerateConfig
    pipe: Any
    kind: str
    device: torch.device
    dtype: torch.dtype
    base_sha256: str
    outputs: list[TrainedOutput]
    adapters: list[InferenceAdapter]
    refiner: Any = None
    #: The folder of an adapted VAE decoding the images (``<model>/vae``), or None: the base's VAE.
    vae_source: str | None = None
    _img2img: Any = None

    @property
    def conditioning(self) -> Any:
        found = [a.conditioning for a in self.adapters if a.conditioning is not None]
        return found[0] if found else None

    @property
    def vocabulary(self) -> dict[str, list[str]] | None:
        found = [a.vocabulary for a in self.adapters if a.vocabulary is not None]
        return found[0] if found else None

    @property
    def tokens(self) -> list[str]:
        """Placeholder tokens of every loaded output (textual inversion, pivotal)."""
        return [token for a in self.adapters for token in a.tokens]

    @property
    def attention(self) -> str:
        processors = {type(p).__name__ for p in self.pipe.unet.attn_processors.values()}
        return ",".join(sorted(processors))

    def rewrite(self, prompt: str) -> str:
        """The prompt as the tokenizer sees it (textual-inversion tokens spelled out)."""
        for adapter in self.adapters:
            if adapter.prompt is not None:
                prompt = adapter.prompt(prompt)
        return prompt

    @property
    def img2img(self) -> Any:
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    @torch.no_grad()
    def __call__(self, requests: list[ImageRequest], size: tuple[int, int]) -> list[Image.Image]:
        """One image per request, in order (one pipeline call; one per reference image with IP-Adapter)."""
        if self.cfg.ip_adapter.enabled:
            images: list[Image.Image | None] = [None] * len(requests)
            keys = list(dict.fromkeys(r.reference_key for r in requests))
            for key in keys:
                chosen = [i for i, r in enumerate(requests) if r.reference_key == key]
                for i, image in zip(chosen, self._call([requests[i] for i in chosen], size)):
                    images[i] = image
            return images  # type: ignore[return-value]
        return self._call(requests, size)

    def _call(self, requests: list[ImageRequest], size: tuple[int, int]) -> list[Image.Image]:
        cfg = self.cfg
        width, height = size
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        common: dict[str, Any] = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, generator=generators)
        if self.conditioning is not None:
            cond, uncond = self.conditioning([r.label for r in requests], [r.attributes for r in requests])
            common.update(
                prompt_embeds=cond.to(self.device, self.dtype), negative_prompt_embeds=uncond.to(self.device, self.dtype)
            )
        else:
            common.update(
                prompt=[self.rewrite(r.prompt) for r in requests],
                negative_prompt=[self.rewrite(r.negative_prompt) for r in requests],
            )
        if cfg.ip_adapter.enabled:
            common["ip_adapter_image"] = requests[0].reference
        if cfg.img2img.enabled:
            return self.img2img(
                image=[r.source for r in requests], strength=cfg.img2img.strength, output_type="pil", **common
            ).images
        if self.refiner is not None:
            handover = 1.0 - cfg.refiner.fraction
            latents = self.pipe(height=height, width=width, denoising_end=handover, output_type="latent", **common).images
            refine = {k: v for k, v in common.items() if k != "ip_adapter_image"}
            return self.refiner(image=latents, denoising_start=handover, output_type="pil", **refine).images
        return self.pipe(height=height, width=width, output_type="pil", **common).images


def resolve_device(cfg: GenerateConfig, process_index: int = 0) -> tuple[torch.device, torch.dtype]:
    """The device of this process and the inference precision."""
    if cfg.device != "auto":
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", process_index % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    if cfg.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = DTYPES[cfg.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("generate.dtype float16 needs a GPU; on the CPU use float32 (or bfloat16)")
    return device, dtype


def load_sampler(cfg: GenerateConfig, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Sampler:
    """The base, every trained output, the scheduler, IP-Adapter and refiner, on ``device``.

    Raises:
        GenerationError: an output trained on other base weights, conflicting outputs, missing
            IP-Adapter / refiner files.
        BaseModelNotFound: the base model is not on this machine.
    """
    from fairsynth.models.architectures import pipeline_kind
    from fairsynth.models.loading import load_base, model_hash

    if cfg.base is None:
        raise ConfigError("generate.base is not set (a recipe fills it from train.base)")
    if device is None or dtype is None:
        device, dtype = resolve_device(cfg)
    outputs = [read_trained_output(spec) for spec in cfg.adapters or []]

    # 1. The base, in the precision it was trained in, so that its hash can be compared.
    pipe = load_base(**dataclasses.asdict(cfg.base))
    base_sha256 = model_hash(pipe)
    for output in outputs:
        if cfg.check_base_hash and output.base_sha256 and output.base_sha256 != base_sha256:
            raise GenerationError(
                f"{output.folder} was trained on base {output.base_source} (weights sha256 {output.base_sha256[:16]}…), "
                f"but generate.base {cfg.base.source} has weights {base_sha256[:16]}…: generate with the base it was "
                "trained on (generate.base.source), or set generate.check_base_hash: false if you know they match"
            )
    kind = pipeline_kind(pipe)
    pipe.scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    vae_source = _load_adapted_vae(pipe, outputs)

    # 2. Every trained output through its method's hook; LoRAs activated together.
    adapters: list[InferenceAdapter] = []
    for i, output in enumerate(outputs):
        try:
            adapters.append(output.build_method().load_for_inference(pipe, output.folder, name=f"adapter{i}", scale=output.spec.scale))
        except (MethodError, ConfigError) as err:
            raise GenerationError(f"adapter {output.folder}: {err}") from None
    if sum(a.conditioning is not None for a in adapters) > 1:
        raise GenerationError("two adapters replace the prompt (class embeddings); generate with one of them")
    loras = {name: scale for a in adapters for name, scale in a.lora_adapters.items()}
    if loras:
        pipe.set_adapters(list(loras), adapter_weights=list(loras.values()))

    # 3. Reference-image conditioning.
    if cfg.ip_adapter.enabled:
        _load_ip_adapter(pipe, cfg)

    # 4. Device and precision.
    pipe.to(device=device, dtype=None if dtype == pipe.unet.dtype else dtype)
    pipe.set_progress_bar_config(disable=True)
    refiner = _load_refiner(pipe, cfg, device, dtype) if cfg.refiner.source else None
    return Sampler(cfg, pipe, kind, device, dtype, base_sha256, outputs, adapters, refiner, vae_source)


def _load_adapted_vae(pipe: Any, outputs: list[TrainedOutput]) -> str | None:
    """The VAE of a trained output whose decoder was adapted (``<model>/vae``, see
    :mod:`fairsynth.training.vae_decoder`) in place of the base's; its folder, or None.

    The adapted VAE must keep the base's encoder bit for bit: the UNet's latents mean what they
    meant in training, only their rendering changed.
    """
    folders = [output.folder / "vae" for output in outputs if (output.folder / "vae" / "config.json").is_file()]
    if not folders:
        return None
    if len(folders) > 1:
        raise GenerationError(f"two adapters bring an adapted VAE ({', '.join(map(str, folders))}); generate with one of them")
    folder = folders[0]
    vae = type(pipe.vae).from_pretrained(str(folder), torch_dtype=pipe.vae.dtype)
    base = pipe.vae.state_dict()
    adapted = vae.state_dict()
    kept = [name for name in base if name.startswith(("encoder.", "quant_conv."))]
    if set(base) != set(adapted) or any(not torch.equal(base[name], adapted[name]) for name in kept):
        raise GenerationError(
            f"{folder} is not the base's VAE with an adapted decoder (its encoder differs from generate.base's): "
            "generate with the base it was trained on"
        )
    pipe.vae = vae
    pipe.register_modules(vae=vae)
    return str(folder)


def _load_ip_adapter(pipe: Any, cfg: GenerateConfig) -> None:
    ip = cfg.ip_adapter
    weights = f"{ip.subfolder}/{ip.weight_name}" if ip.subfolder else ip.weight_name
    encoder_config = f"{ip.image_encoder}/config.json"
    root = Path(ip.path).expanduser()
    if root.is_dir():
        missing = [str(root / name) for name in (weights, encoder_config) if not (root / name).is_file()]
    else:
        from huggingface_hub import try_to_load_from_cache

        missing = [
            f"{ip.path}/{name}" for name in (weights, encoder_config)
            if not isinstance(try_to_load_from_cache(ip.path, name), str)
        ]
    if missing:
        raise GenerationError(
            f"IP-Adapter file(s) missing on this machine: {', '.join(missing)}; on a machine with internet run "
            f"`hf download {ip.path if not root.is_dir() else 'h94/IP-Adapter'} {weights} {ip.image_encoder}/config.json "
            f"{ip.image_encoder}/model.safetensors` and point generate.ip_adapter.path at the downloaded folder"
        )
    pipe.load_ip_adapter(
        str(root) if root.is_dir() else ip.path, subfolder=ip.subfolder, weight_name=ip.weight_name,
        image_encoder_folder=ip.image_encoder, local_files_only=True,
    )
    pipe.set_ip_adapter_scale(ip.scale)


def _load_refiner(pipe: Any, cfg: GenerateConfig, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from fairsynth.models.loading import is_offline

    if getattr(pipe, "text_encoder_2", None) is None:
        raise GenerationError("generate.refiner needs an SDXL base (generate.base is SD 1.x/2.x)")
    source = cfg.refiner.source
    local = Path(source).expanduser()
    try:
        refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
            str(local) if local.is_dir() else source, text_encoder_2=pipe.text_encoder_2, vae=pipe.vae,
            local_files_only=local.is_dir() or is_offline(), add_watermarker=False,
        )
    except OSError as err:
        raise GenerationError(
            f"SDXL refiner {source} is not on this machine ({str(err).splitlines()[0][:160]}); `hf download {source}` on a "
            "machine with internet and copy the cache, or set generate.refiner.source to a local folder"
        ) from None
    refiner.scheduler = make_scheduler(cfg.scheduler, refiner.scheduler.config)
    refiner.to(device=device, dtype=None if dtype == refiner.unet.dtype else dtype)
    refiner.set_progress_bar_config(disable=True)
    return refiner
