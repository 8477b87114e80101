"""Load a Stable Diffusion base model offline, from a hub id, a diffusers folder or one file.

    pipe = load_base("runwayml/stable-diffusion-v1-5")               # from the local HF cache
    pipe = load_base("models/my-sdxl")                                # folder with model_index.json
    pipe = load_base("models/derm.safetensors", dtype="float16")      # A1111/ComfyUI single file

The kind (``"sd"``: SD 1.x/2.x, ``"sdxl"``) is read from ``model_index.json`` or, for a single
file, from its tensor names; pipelines come without safety checker, feature extractor or
watermarker. Nothing is downloaded when the machine is offline (``HF_HUB_OFFLINE=1``) and
remote code is never run. A model that isn't on this machine raises :class:`BaseModelNotFound`
with one sentence saying how to bring it here.

:func:`model_hash` fingerprints weights for cache keys and provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from fairsynth.config import ConfigError, knob
from fairsynth.io import sha256_file
from fairsynth.models.architectures import PipelineKind, pipeline_kind
from fairsynth.models.single_file import (
    PICKLE_SUFFIXES,
    SINGLE_FILE_SUFFIXES,
    UnsafeCheckpointError,
    UnsupportedLayoutError,
    check_checkpoint_matches,
    checkpoint_family,
    checkpoint_shapes,
    family_kind,
    reference_configs,
    write_config_folder,
)

Kind = Literal["auto", "sd", "sdxl"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

#: Hub repositories that moved; either name finds the other in the cache.
HUB_MIRRORS: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "runwayml/stable-diffusion-v1-5",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES


class BaseModelNotFound(FileNotFoundError):
    """The base model is neither on this machine nor downloadable; the message says what to do."""


#: ``source`` naming fairsynth's shipped tiny base (:func:`fairsynth.models.embedded.embedded_base_path`).
EMBEDDED = "embedded"
#: ``source`` naming its SDXL-shaped twin (:func:`fairsynth.models.embedded.embedded_sdxl_base_path`).
EMBEDDED_SDXL = "embedded-sdxl"


@dataclass
class BaseModelConfig:
    """The Stable Diffusion model that fine-tuning starts from."""

    source: str = knob(
        "runwayml/stable-diffusion-v1-5",
        "Hub id (read from the local Hugging Face cache when offline), a diffusers folder with "
        "model_index.json, a single .safetensors checkpoint (A1111/ComfyUI layout), `embedded`: "
        "fairsynth's own tiny SD-shaped base (64 px, offline), or `embedded-sdxl`: its SDXL-shaped "
        "twin (two text encoders, 64 px, offline).",
    )
    revision: str | None = knob(None, "Hub branch, tag or commit; hub ids only.")
    variant: str | None = knob(
        None, "Weight variant such as 'fp16' (files named *.fp16.safetensors); hub ids and folders."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = knob(
        "float32", "Precision the weights are loaded in; float16/bfloat16 halve memory on a GPU."
    )
    kind: Literal["auto", "sd", "sdxl"] = knob(
        "auto", "'sd' (SD 1.x/2.x), 'sdxl', or 'auto' to read it from the model."
    )
    single_file_config: str | None = knob(
        None, "Single files only: a diffusers folder (or cached hub id) with the model's configs. "
        "Default: built-in SD 1.5 / SDXL base configs, chosen from the file's tensors."
    )

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("base.source must name a hub id, a diffusers folder or a checkpoint file")
        if self.dtype not in DTYPES:
            raise ConfigError(f"base.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.kind not in ("auto", "sd", "sdxl"):
            raise ConfigError(f"base.kind must be 'auto', 'sd' or 'sdxl', got {self.kind!r}")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def is_offline() -> bool:
    """True when any of HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, DIFFUSERS_OFFLINE is set, read now."""
    return any(
        os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")
    )


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns); use what it knows."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present with `dtype`)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _kind_from_index(index: Mapping[str, Any], name: str) -> PipelineKind:
    """SD or SDXL from a ``model_index.json``; other pipelines are refused."""
    class_name = str(index.get("_class_name", ""))
    if "text_encoder_2" in index and index.get("text_encoder_2", [None])[0] is not None:
        if index.get("text_encoder", [None])[0] is None:
            raise UnsupportedLayoutError(
                f"{name} is an SDXL refiner ({class_name}, no first text encoder); "
                "fairsynth fine-tunes SDXL base models"
            )
        return "sdxl"
    if "XL" in class_name:
        return "sdxl"
    if all(index.get(part, [None])[0] is not None for part in ("unet", "vae", "text_encoder", "tokenizer")):
        return "sd"
    raise UnsupportedLayoutError(
        f"{name} is a {class_name or 'pipeline'} without a UNet, VAE and CLIP text encoder; "
        "fairsynth loads Stable Diffusion 1.x/2.x and SDXL"
    )


def _check_kind(asked: Kind, found: PipelineKind, name: str) -> PipelineKind:
    if asked not in ("auto", "sd", "sdxl"):
        raise ValueError(f"kind must be 'auto', 'sd' or 'sdxl', got {asked!r}")
    if asked != "auto" and asked != found:
        label = {"sd": "an SD 1.x/2.x", "sdxl": "an SDXL"}
        raise ValueError(f"{name} is {label[found]} model, but kind={asked!r} was asked for")
    return found


def _pipeline_class(kind: PipelineKind) -> type[DiffusionPipeline]:
    return StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline


def _without_extras(kind: PipelineKind) -> dict[str, Any]:
    """Keyword arguments that leave out the safety checker / watermarker."""
    if kind == "sdxl":
        return {"add_watermarker": False}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or "\\" in source
        or source.lower().endswith(SINGLE_FILE_SUFFIXES)
        or source.count("/") != 1
    )


# --------------------------------------------------------------------------------------
# The three sources
# --------------------------------------------------------------------------------------


def _load_folder(folder: Path, kind: Kind, dtype: torch.dtype, variant: str | None) -> DiffusionPipeline:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise BaseModelNotFound(
            f"{folder} has no model_index.json, so it is not a diffusers pipeline folder; "
            "pass a folder written by save_pretrained, a hub id or a single .safetensors file"
        )
    found = _kind_from_index(json.loads(index_file.read_text(encoding="utf-8")), str(folder))
    found = _check_kind(kind, found, str(folder))
    return _pipeline_class(found).from_pretrained(
        folder, variant=variant, **_dtype_kwargs(dtype), local_files_only=True, **_without_extras(found)
    )


def _load_single_file(
    path: Path, kind: Kind, dtype: torch.dtype, config: str | os.PathLike | None, cache_dir: Path
) -> DiffusionPipeline:
    shapes = checkpoint_shapes(path)  # refuses unsafe pickles before diffusers sees the file
    family = checkpoint_family(shapes)
    found = family_kind(family)
    if found is None:
        raise UnsupportedLayoutError(
            f"{path.name} is not an SD 1.x/2.x or SDXL base checkpoint (found: {family.replace('_', ' ')}); "
            "fairsynth loads those families"
        )
    found = _check_kind(kind, found, path.name)
    common = dict(local_files_only=True, **_dtype_kwargs(dtype), **_without_extras(found))
    if config is not None:
        config_text = os.fspath(config)
        if not Path(config_text).expanduser().is_dir():
            # a hub id: diffusers would try to download it even with local_files_only=True
            if not _HUB_ID.match(config_text):
                raise BaseModelNotFound(f"single_file_config {config_text} is neither a folder nor a hub id")
            if _cached_model_index(config_text, None, cache_dir) is None and is_offline():
                raise BaseModelNotFound(_not_cached_message(config_text, cache_dir, "this machine is offline"))
        return _pipeline_class(found).from_single_file(str(path), config=config_text, cache_dir=cache_dir, **common)
    configs = reference_configs(family)
    check_checkpoint_matches(shapes, configs, path.name, "SDXL base" if family == "sdxl" else "SD 1.5")
    with tempfile.TemporaryDirectory(prefix="fairsynth-configs-") as folder:
        write_config_folder(configs, folder)
        return _pipeline_class(found).from_single_file(str(path), config=folder, **common)


def _cached_model_index(repo_id: str, revision: str | None, cache_dir: Path) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir, revision=revision)
    return cached if isinstance(cached, str) else None


def _not_cached_message(repo_id: str, cache_dir: Path, reason: str) -> str:
    return (
        f"{repo_id} is not in the local Hugging Face cache ({cache_dir}) and {reason}; "
        f"download it on a machine with internet with `hf download {repo_id}` and copy the cache, "
        "or pass a local diffusers folder / single-file checkpoint"
    )


def _load_hub(
    repo_id: str, kind: Kind, dtype: torch.dtype, revision: str | None, variant: str | None, cache_dir: Path
) -> DiffusionPipeline:
    offline = is_offline()
    index_path = None
    for candidate in (repo_id, HUB_MIRRORS.get(repo_id)):
        if candidate and (index_path := _cached_model_index(candidate, revision, cache_dir)):
            repo_id = candidate
            break
    if index_path is None:
        if offline:
            raise BaseModelNotFound(_not_cached_message(repo_id, cache_dir, "this machine is offline"))
        from huggingface_hub import hf_hub_download

        try:
            index_path = hf_hub_download(repo_id, "model_index.json", revision=revision, cache_dir=cache_dir)
        except Exception as err:  # no network, unknown repo, gated repo: all end the same way
            raise BaseModelNotFound(
                _not_cached_message(repo_id, cache_dir, f"could not be downloaded ({type(err).__name__})")
            ) from err
    found = _kind_from_index(json.loads(Path(index_path).read_text(encoding="utf-8")), repo_id)
    found = _check_kind(kind, found, repo_id)
    try:
        return _pipeline_class(found).from_pretrained(
            repo_id,
            revision=revision,
            variant=variant,
            cache_dir=cache_dir,
            **_dtype_kwargs(dtype),
            local_files_only=offline,
            **_without_extras(found),
        )
    except OSError as err:
        if not offline:
            raise
        raise BaseModelNotFound(
            f"{repo_id} is only partly in the local Hugging Face cache ({cache_dir}) and this machine is offline "
            f"({str(err).splitlines()[0][:200]}); finish the download with `hf download {repo_id}` on a machine "
            "with internet and copy the cache"
        ) from err


def load_base(
    source: str | os.PathLike,
    kind: Kind = "auto",
    dtype: str | torch.dtype = "float32",
    *,
    revision: str | None = None,
    variant: str | None = None,
    single_file_config: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Load a Stable Diffusion (1.x/2.x) or SDXL pipeline from ``source``.

    Args:
        source: a hub id (``runwayml/stable-diffusion-v1-5``,
            ``stabilityai/stable-diffusion-2-1-base``, ``stabilityai/stable-diffusion-xl-base-1.0``),
            a diffusers folder (``model_index.json``), or a single-file checkpoint. Single
            files should be ``.safetensors``; ``.ckpt``/``.pt``/``.bin`` are read only when
            ``torch.load(weights_only=True)`` accepts them. ``"embedded"`` / ``"embedded-sdxl"``:
            fairsynth's shipped tiny SD / SDXL-shaped bases.
        kind: ``"auto"`` reads it from the model; ``"sd"``/``"sdxl"`` also check it.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or a ``torch.dtype``.
        revision: hub branch/tag/commit (hub ids only).
        variant: weight variant, e.g. ``"fp16"`` (hub ids and folders).
        single_file_config: single files only — a diffusers folder (or cached hub id) with the
            configs, as diffusers' ``from_single_file(config=...)``;
            by default the built-in SD 1.5 / SDXL base configs, after checking that every
            tensor is there with the right shape. ``.ckpt`` files are read twice (once by
            fairsynth's safety check, once by diffusers, both with ``weights_only=True``).
        cache_dir: Hugging Face hub cache; default from HF_HUB_CACHE / HF_HOME.

    Keyword names match :class:`BaseModelConfig`: ``load_base(**dataclasses.asdict(cfg))``.

    Raises:
        BaseModelNotFound: the model isn't on this machine and can't be downloaded.
        UnsafeCheckpointError: a pickled checkpoint that holds more than tensors.
        UnsupportedLayoutError: not an SD 1.x/2.x or SDXL base model.

    Example:
        >>> pipe = load_base("stabilityai/stable-diffusion-xl-base-1.0", dtype="float16")  # doctest: +SKIP
    """
    torch_dtype = _torch_dtype(dtype)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hub_cache_dir()
    text = os.fspath(source)
    if text in (EMBEDDED, EMBEDDED_SDXL):
        from fairsynth.models.embedded import embedded_base_path, embedded_sdxl_base_path

        # raises EmbeddedBaseMissing, naming the build command
        text = os.fspath(embedded_base_path() if text == EMBEDDED else embedded_sdxl_base_path())
    path = Path(text).expanduser()
    if path.exists() or _looks_like_path(text):
        if revision is not None:
            raise ValueError(f"revision applies to hub ids only, not to the local path {text}")
        if path.is_dir():
            if single_file_config is not None:
                raise ValueError("single_file_config applies to single-file checkpoints, not to a diffusers folder")
            return _load_folder(path, kind, torch_dtype, variant)
        if path.is_file():
            if variant is not None:
                raise ValueError(f"variant applies to hub ids and folders, not to the single file {path.name}")
            return _load_single_file(path, kind, torch_dtype, single_file_config, cache)
        raise BaseModelNotFound(
            f"{text} does not exist; pass a hub id, a diffusers folder or a single .safetensors checkpoint"
        )
    if not _HUB_ID.match(text):
        raise BaseModelNotFound(f"{text!r} is neither an existing path nor a hub id of the form owner/name")
    if single_file_config is not None:
        raise ValueError("single_file_config applies to single-file checkpoints, not to a hub id")
    return _load_hub(text, kind, torch_dtype, revision, variant, cache)


# --------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------


def _update_with_state_dict(digest: Any, prefix: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        header = f"{prefix}{key}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}\n"
        digest.update(header.encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes, no copy


def _weight_files(folder: Path) -> list[Path]:
    """Weight files of a folder: every ``.safetensors``, and pickles only where a folder has none."""
    files = []
    for directory in sorted({path.parent for path in folder.rglob("*") if path.is_file()}):
        here = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _WEIGHT_SUFFIXES)
        safetensors = [p for p in here if p.suffix.lower() == ".safetensors"]
        files += safetensors or here
    return files


def model_hash(model: Any) -> str:
    """A sha256 (hex) fingerprint of a model's weights, for cache keys and provenance.

    - a pipeline, a ``torch.nn.Module`` or a dict of modules: every tensor of every module
      (pipelines: UNet, VAE, text encoders) with its name, dtype and shape, in sorted order.
      The same weights give the same hash after a save/load round trip; any changed value,
      dtype or name changes it. Configs, tokenizers and schedulers are not included.
    - a folder: the bytes of its weight files (``.safetensors``; pickles only in
      sub-folders without any) with their relative paths.
    - a file: its bytes.

    The three are different fingerprints: a folder's file hash differs from the hash of the
    pipeline loaded from it. The in-memory hash names tensors as the installed transformers/
    diffusers versions do, so it can change when those rename a weight.
    """
    digest = hashlib.sha256()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        if path.is_file():
            return sha256_file(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} does not exist")
        files = _weight_files(path)
        if not files:
            raise FileNotFoundError(f"{path} holds no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
        for file in files:
            digest.update(f"{file.relative_to(path).as_posix()}|{sha256_file(file)}\n".encode("utf-8"))
        return digest.hexdigest()
    if isinstance(model, torch.nn.Module):
        _update_with_state_dict(digest, "", model.state_dict())
        return digest.hexdigest()
    components = model.components if isinstance(model, DiffusionPipeline) else model
    if not isinstance(components, Mapping):
        raise TypeError(
            f"model_hash takes a pipeline, a module, a dict of modules or a path, not {type(model).__name__}"
        )
    modules = {name: value for name, value in components.items() if isinstance(value, torch.nn.Module)}
    if not modules:
        raise ValueError("model_hash found no torch modules to hash")
    for name in sorted(modules):
        _update_with_state_dict(digest, f"{name}/", modules[name].state_dict())
    return digest.hexdigest()


__all__ = [
    "BaseModelConfig",
    "BaseModelNotFound",
    "DTYPES",
    "UnsafeCheckpointError",
    "UnsupportedLayoutError",
    "hub_cache_dir",
    "is_offline",
    "load_base",
    "model_hash",
    "pipeline_kind",
]
