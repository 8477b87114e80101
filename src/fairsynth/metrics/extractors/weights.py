"""Where feature-extractor weights come from, in one order for every extractor.

1. an explicit path (``evaluate.weights.<extractor>=PATH``);
2. a fairsynth weights folder: ``$FAIRSYNTH_WEIGHTS/<file name>``;
3. the standard caches: ``$TORCH_HOME/hub/checkpoints`` (torch.hub, torchvision), the Hugging
   Face cache (``$HF_HOME``/``$HF_HUB_CACHE``), and files an installed package ships (LPIPS heads);
4. a download, only when the machine is online (none of ``HF_HUB_OFFLINE``,
   ``TRANSFORMERS_OFFLINE``, ``DIFFUSERS_OFFLINE``, ``FAIRSYNTH_OFFLINE`` is set).

Offline and missing is one :class:`WeightsNotFound` naming the file, every place looked and the
command that fetches it (``fairsynth weights fetch NAME --dir DIR`` on a machine with internet).
Files are read as safetensors, or as tensors-only pickles with ``torch.load(weights_only=True)``.
Every file's sha256 is recorded with the numbers it produced; where the standard file's hash is
known, whether it matches is recorded too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fairsynth.io import sha256_file

#: Environment variable naming a fairsynth weights folder.
WEIGHTS_ENV = "FAIRSYNTH_WEIGHTS"

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "FAIRSYNTH_OFFLINE")


class WeightsNotFound(FileNotFoundError):
    """Weights an extractor needs are not on this machine (and cannot be downloaded now)."""


@dataclass(frozen=True)
class WeightsFile:
    """One weights file an extractor needs, and everywhere it may be found.

    Attributes:
        name: what `fairsynth weights fetch NAME` calls it (usually the extractor's name).
        filename: its name in a fairsynth weights folder and in torch.hub's checkpoint cache.
        what: one line for people.
        url: direct download (torch.hub style; the file name's hash suffix is checked).
        hf_repo, hf_filename: where it lives on the Hugging Face Hub (and in its cache).
        aliases: other names the same file goes by (torch-fidelity's name for the FID Inception).
        sha256_prefix: start of the standard file's sha256 where known (torch.hub's convention
            puts it in the file name).
        package_file: ``(package, relative path)`` of a copy an installed package ships.
        size: approximate download size, for people.
    """

    name: str
    filename: str
    what: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    aliases: tuple[str, ...] = ()
    sha256_prefix: str | None = None
    package_file: tuple[str, str] | None = None
    size: str = ""

    def fetch_command(self) -> str:
        return f"fairsynth weights fetch {self.name} --dir DIR"


#: Every weights file an extractor may need, by name; extractor modules add theirs
#: (:func:`fairsynth.metrics.extractors.known_weights` imports them all first).
KNOWN_WEIGHTS: dict[str, WeightsFile] = {}


def register_weights(spec: WeightsFile) -> WeightsFile:
    if spec.name in KNOWN_WEIGHTS and KNOWN_WEIGHTS[spec.name] != spec:
        raise ValueError(f"weights {spec.name!r} are registered twice")
    KNOWN_WEIGHTS[spec.name] = spec
    return spec


def is_offline() -> bool:
    """True when any of the offline switches is set (read now, not at import)."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in _OFFLINE_ENV)


def weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(value).expanduser() if value else None


def torch_checkpoints_dir() -> Path:
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where torchvision looks."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _package_path(spec: WeightsFile) -> Path | None:
    if spec.package_file is None:
        return None
    package, relative = spec.package_file
    found = importlib.util.find_spec(package)
    if found is None or not found.origin:
        return None
    return Path(found.origin).parent / relative


def _hf_cached(spec: WeightsFile) -> Path | None:
    if not spec.hf_repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    found = try_to_load_from_cache(spec.hf_repo, spec.hf_filename or spec.filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def search_locations(spec: WeightsFile) -> list[tuple[str, Path | None]]:
    """``(where, path)`` for every place the file is looked for, in order (path None: not there)."""
    names = (spec.filename, *spec.aliases)
    places: list[tuple[str, Path | None]] = []
    folder = weights_dir()
    if folder is not None:
        places += [(f"${WEIGHTS_ENV}", folder / name) for name in names]
    checkpoints = torch_checkpoints_dir()
    places += [("torch hub cache", checkpoints / name) for name in names]
    if spec.hf_repo:
        places.append((f"Hugging Face cache ({spec.hf_repo})", _hf_cached(spec)))
    if spec.package_file:
        places.append((f"the {spec.package_file[0]} package", _package_path(spec)))
    return places


def locate(spec: WeightsFile) -> Path | None:
    """The first existing copy of ``spec``, without downloading."""
    for _, path in search_locations(spec):
        if path is not None and path.is_file():
            return path
    return None


def _not_found_message(spec: WeightsFile, reason: str) -> str:
    looked = []
    folder = weights_dir()
    looked.append(f"${WEIGHTS_ENV}={folder}" if folder else f"${WEIGHTS_ENV} (not set)")
    looked.append(str(torch_checkpoints_dir()))
    if spec.hf_repo:
        looked.append(f"the Hugging Face cache {hf_cache_dir()} for {spec.hf_repo}")
    if spec.package_file:
        looked.append(f"the installed {spec.package_file[0]} package")
    return (
        f"{spec.what} needs {spec.filename}{f' ({spec.size})' if spec.size else ''}, which is not on this machine "
        f"({reason}); looked in {', '.join(looked)}. On a machine with internet run "
        f"`{spec.fetch_command()}`, copy DIR here and set {WEIGHTS_ENV}=DIR "
        f"(or pass the file as evaluate.weights.<extractor>=PATH)."
    )


def find_weights(spec: WeightsFile, explicit: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The weights file for ``spec``: explicit path, fairsynth folder, caches, then a download."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"weights file {path} (given for {spec.what}) does not exist")
        return path
    found = locate(spec)
    if found is not None:
        return found
    if not download or is_offline():
        raise WeightsNotFound(_not_found_message(spec, "this machine is offline" if is_offline() else "downloads are off"))
    try:
        return fetch(spec, weights_dir())
    except Exception as err:  # network, HTTP, hash mismatch: all end here with the same advice
        raise WeightsNotFound(_not_found_message(spec, f"the download failed: {err}")) from err


def fetch(spec: WeightsFile, directory: str | os.PathLike | None = None) -> Path:
    """Download ``spec`` (or copy a package's copy) into ``directory``, or into the standard
    cache when ``directory`` is None; returns the file. Needs internet except for package files."""
    if directory is None:
        existing = locate(spec)
        if existing is not None:
            return existing
    target_dir = Path(directory).expanduser() if directory is not None else None
    if target_dir is not None and (target_dir / spec.filename).is_file():
        return target_dir / spec.filename

    def copy_into_target(source: Path) -> Path:
        target_dir.mkdir(parents=True, exist_ok=True)
        partial = target_dir / f".{spec.filename}.partial"
        shutil.copyfile(source, partial)
        os.replace(partial, target_dir / spec.filename)
        return target_dir / spec.filename

    package_copy = _package_path(spec)
    if package_copy is not None and package_copy.is_file():
        return package_copy if target_dir is None else copy_into_target(package_copy)
    if spec.hf_repo:
        from huggingface_hub import hf_hub_download

        cached = Path(hf_hub_download(spec.hf_repo, spec.hf_filename or spec.filename, cache_dir=hf_cache_dir()))
        return cached if target_dir is None else copy_into_target(cached)
    if spec.url:
        target_dir = target_dir or torch_checkpoints_dir()
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / spec.filename
        partial = target.with_name(target.name + ".partial")
        torch.hub.download_url_to_file(spec.url, str(partial), hash_prefix=spec.sha256_prefix, progress=True)
        os.replace(partial, target)
        return target
    raise WeightsNotFound(f"{spec.what}: no download source is known for {spec.filename}")


_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) within the process."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(resolved)
    return _SHA256[key]


def matches_reference(spec: WeightsFile | None, sha256: str) -> bool | None:
    """Whether ``sha256`` is the standard file's (None where the standard hash is unknown)."""
    if spec is None or not spec.sha256_prefix:
        return None
    return sha256.startswith(spec.sha256_prefix)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a pickle read with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a tensors-only weights file ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return loaded


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str, source: str | os.PathLike) -> None:
    """Load ``state_dict`` strictly into ``module``; one error listing what does not fit.

    BatchNorm's ``num_batches_tracked`` counters are ignored (older files lack them; they do
    not affect evaluation).
    """
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with the wrong shape (e.g. {k}: file {tuple(given[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise ValueError(f"{source} does not hold {what} weights: {'; '.join(parts)}")
    module.load_state_dict(given, strict=False)
