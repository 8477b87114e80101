"""The feature-extractor contract, and the one image-size policy every extractor shares.

An extractor turns uint8 RGB images ``(B, 3, H, W)`` at its ``input_size`` into features
``(B, d)``. Images reach it through :func:`prepare_image`, the same for every extractor:
the project's resize (PIL Lanczos on the 8-bit image, :func:`fairsynth.data.preprocess.resize_crop`)
of the whole image to the extractor's input size. Resizing outside the network means no
network-internal resize ever runs, so the numbers do not depend on a tensor library's
interpolation (clean-fid's argument, Parmar et al. 2022); it equals neither legacy FID's
TF-style bilinear nor clean-fid's bicubic, nor torchmetrics' ``antialias=True`` bilinear, and
every result says so.

Models are built lazily (:meth:`Extractor.load`), so that listing and validating extractors is
cheap and weights are looked up only when features are actually missing from the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fairsynth.data.preprocess import resize_crop
from fairsynth.metrics.extractors.weights import (
    WeightsFile,
    WeightsNotFound,
    file_sha256,
    find_weights,
    matches_reference,
)

#: Identifies :func:`prepare_image`; part of every cache key and recorded with every result.
IMAGE_SIZE_POLICY_ID = "pil-lanczos-uint8-whole-image-v1"
IMAGE_SIZE_POLICY = (
    "8-bit RGB (EXIF orientation applied), whole image resized to the extractor's input size with "
    "PIL Lanczos (antialiased) on uint8, no crop (non-square images change aspect ratio); "
    "no resize inside the network"
)


def prepare_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The policy: ``image`` (RGB) → uint8 ``(H, W, 3)`` at ``size`` = (width, height)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    if image.size != size:
        image = resize_crop(image, size, crop="none")
    return np.array(image, dtype=np.uint8)  # a writable copy


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Fingerprint of a module's tensors (names, dtypes, shapes, values), for weights made in code."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


class Extractor:
    """Base class: weights lookup, lazy model, provenance. Subclasses set the class attributes
    and implement :meth:`build` and :meth:`embed`.

    Args:
        weights: explicit weights file; None follows :mod:`.weights`' lookup order.
        device: torch device the network runs on.
        download: allow a download when the weights are missing and the machine is online.
    """

    #: Registry name (set by each subclass).
    name: ClassVar[str] = ""
    #: (width, height) the network takes.
    input_size: tuple[int, int] = (224, 224)
    #: Length of the feature vector.
    feature_dim: int = 0
    #: True only for extractors whose numbers mean nothing outside tests.
    test_only: ClassVar[bool] = False
    #: What the network is, for people and for the provenance record.
    implementation: str = ""
    #: The weights file looked up when none is given (None: weights are built in code).
    weights_file: WeightsFile | None = None

    def __init__(self, weights: str | None = None, device: str = "cpu", download: bool = True) -> None:
        self.explicit_weights = weights
        self.device = torch.device(device)
        self.download = download
        self.weights_path: str | None = None
        self.weights_sha256: str | None = None
        self._model: torch.nn.Module | None = None

    # -- to implement ----------------------------------------------------------------

    def build(self, weights_path: str | None) -> torch.nn.Module:
        """The network with its weights loaded, in eval mode."""
        raise NotImplementedError

    def embed(self, model: torch.nn.Module, images: Tensor) -> Tensor:
        """Features ``(B, d)`` of uint8 images ``(B, 3, H, W)`` already on the device."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Options that change the features (part of the cache key and the provenance)."""
        return {}

    # -- shared ----------------------------------------------------------------------

    def resolve_weights(self) -> str | None:
        """Path of the weights file (looked up, maybe downloaded) and its sha256."""
        if self.weights_file is None and not self.explicit_weights:
            return None
        if self.weights_file is None:
            path = Path(str(self.explicit_weights)).expanduser()
            if not path.is_file():
                raise WeightsNotFound(f"{self.name}: weights file {path} does not exist")
        else:
            path = find_weights(self.weights_file, self.explicit_weights, download=self.download)
        self.weights_path = str(path)
        self.weights_sha256 = file_sha256(path)
        return self.weights_path

    def load(self) -> torch.nn.Module:
        if self._model is None:
            path = self.resolve_weights()
            model = self.build(path).to(self.device).eval()
            model.requires_grad_(False)
            if self.weights_sha256 is None:  # weights made in code
                self.weights_sha256 = state_dict_sha256(model)
            self._model = model
        return self._model

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Features ``(B, d)`` float32 of uint8 images ``(B, 3, H, W)`` at :attr:`input_size`."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        width, height = self.input_size
        if tuple(images.shape[2:]) != (height, width):
            raise ValueError(
                f"{self.name}: images must be {width}x{height} (resized by prepare_image), got "
                f"{images.shape[3]}x{images.shape[2]}"
            )
        model = self.load()
        return self.embed(model, images.to(self.device)).to(torch.float32).cpu()

    def weights_identity(self) -> str:
        """sha256 of the weights (looks the file up, or builds the network, when not yet known)."""
        if self.weights_sha256 is None:
            if self.weights_file is not None or self.explicit_weights:
                self.resolve_weights()
            else:
                self.load()
        assert self.weights_sha256 is not None
        return self.weights_sha256

    def cache_key(self) -> str:
        """Features are reused only for the same extractor, options, weights and size policy."""
        parts = [self.name, repr(sorted(self.options().items())), self.weights_identity(), IMAGE_SIZE_POLICY_ID]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def provenance(self) -> dict[str, Any]:
        """What produced the features: recorded with every number computed from them."""
        self.weights_identity()  # resolves the weights file (or builds the network) if not yet done
        match = matches_reference(self.weights_file, self.weights_sha256) if self.weights_path else None
        record: dict[str, Any] = {
            "extractor": self.name,
            "implementation": self.implementation,
            "options": self.options(),
            "feature_dim": self.feature_dim,
            "input_size": list(self.input_size),
            "image_size_policy": IMAGE_SIZE_POLICY,
            "image_size_policy_id": IMAGE_SIZE_POLICY_ID,
            "weights_file": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "weights_reference": self.weights_file.filename if self.weights_file else None,
            "weights_match_reference": match,
            "test_only": self.test_only,
        }
        if self.test_only:
            record["warning"] = TEST_ONLY_WARNING.format(name=self.name)
        elif match is False:
            record["warning"] = (
                f"the weights file's sha256 does not start with {self.weights_file.sha256_prefix}, the hash in the "
                f"standard file's name ({self.weights_file.filename}): numbers may not be comparable with published ones"
            )
        return record


TEST_ONLY_WARNING = (
    "RANDOM WEIGHTS — the `{name}` extractor exists only for tests and benchmarks; "
    "its numbers say nothing about image quality"
)

