"""LPIPS v0.1 embeddings: ``‖φ(x) − φ(y)‖²`` is the lpips package's distance between x and y.

The backbone is torchvision's AlexNet (or VGG16 with ``net=vgg``), cut after its five ReLU
stages as the lpips package cuts it, with ImageNet weights from torchvision's cache
(``alexnet-owt-7be5be79.pth``); the linear heads are the ones the lpips package ships
(``weights/v0.1/alex.pth``). See :mod:`fairsynth.metrics.functional.lpips` for why a distance
becomes an embedding.

Images follow the shared size policy at ``size`` × ``size`` (64 by default, the LPIPS paper's
patch size): φ has 31,872 numbers per image at 64 px with AlexNet, and grows with the square
of the size, which the feature cache has to hold.
"""

from __future__ import annotations

import hashlib

from torch import Tensor, nn

from fairsynth.metrics.extractors import EXTRACTORS
from fairsynth.metrics.extractors.base import Extractor
from fairsynth.metrics.extractors.weights import (
    WeightsFile,
    file_sha256,
    find_weights,
    load_into,
    load_state_dict,
    register_weights,
)
from fairsynth.metrics.functional.lpips import lpips_embedding, scale_input

ALEXNET_WEIGHTS = register_weights(
    WeightsFile(
        name="lpips",
        filename="alexnet-owt-7be5be79.pth",
        what="AlexNet ImageNet weights (torchvision), LPIPS' backbone",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256_prefix="7be5be79",
        size="233 MB",
    )
)
ALEX_HEADS = register_weights(
    WeightsFile(
        name="lpips-alex-heads",
        filename="lpips_v0.1_alex.pth",
        what="LPIPS v0.1 linear heads for AlexNet (shipped by the lpips package)",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        package_file=("lpips", "weights/v0.1/alex.pth"),
        size="6 KB",
    )
)
VGG16_WEIGHTS = register_weights(
    WeightsFile(
        name="lpips-vgg",
        filename="vgg16-397923af.pth",
        what="VGG16 ImageNet weights (torchvision), LPIPS-VGG's backbone",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256_prefix="397923af",
        size="528 MB",
    )
)
VGG_HEADS = register_weights(
    WeightsFile(
        name="lpips-vgg-heads",
        filename="lpips_v0.1_vgg.pth",
        what="LPIPS v0.1 linear heads for VGG16 (shipped by the lpips package)",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        package_file=("lpips", "weights/v0.1/vgg.pth"),
        size="7 KB",
    )
)

#: Where the lpips package cuts each backbone's ``features`` (end index of each ReLU stage).
_CUTS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}


class LPIPSNet(nn.Module):
    """Backbone stages plus the five non-negative heads; ``forward`` returns φ ``(B, D)``."""

    def __init__(self, net: str) -> None:
        super().__init__()
        import torchvision

        backbone = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
        self.backbone = backbone
        self.cuts = _CUTS[net]
        self.head_list: list[Tensor] = []

    def set_heads(self, heads: list[Tensor]) -> None:
        self.head_list = [h.detach().clone() for h in heads]

    def forward(self, images: Tensor) -> Tensor:
        x = scale_input(images)  # (B, 3, S, S)
        activations, start = [], 0
        for end in self.cuts:
            for layer in self.backbone.features[start:end]:
                x = layer(x)
            activations.append(x)  # (B, C_l, H_l, W_l)
            start = end
        return lpips_embedding(activations, [h.to(x.device) for h in self.head_list])  # (B, D)


@EXTRACTORS.register("lpips", help="LPIPS v0.1 embeddings (AlexNet + the lpips package's heads), 64 px: ‖φx − φy‖² = LPIPS")
class LPIPSExtractor(Extractor):
    """LPIPS embeddings."""

    name = "lpips"

    def __init__(
        self, weights: str | None = None, device: str = "cpu", download: bool = True,
        net: str = "alex", size: int = 64, heads: str | None = None,
    ) -> None:
        super().__init__(weights=weights, device=device, download=download)
        if net not in _CUTS:
            raise TypeError(f"net must be one of {', '.join(_CUTS)}, got {net!r}")
        if size < 32:
            raise TypeError(f"size must be >= 32 (the backbones downsample 16x), got {size}")
        self.net, self.size, self.explicit_heads = net, size, heads
        self.input_size = (size, size)
        self.weights_file = ALEXNET_WEIGHTS if net == "alex" else VGG16_WEIGHTS
        self.heads_file = ALEX_HEADS if net == "alex" else VGG_HEADS
        self.heads_path: str | None = None
        self.heads_sha256: str | None = None
        self.implementation = (
            f"fairsynth LPIPS v0.1 embedding: torchvision {'AlexNet' if net == 'alex' else 'VGG16'} features cut "
            "after each ReLU stage as the lpips package does, channel-normalised, scaled by sqrt(head / (H W)); "
            f"{size}x{size} input scaled to [-1, 1] with LPIPS' shift/scale"
        )
        self.feature_dim = self._dimension()

    def _dimension(self) -> int:
        """Length of φ: channels × positions summed over the five stages."""
        if self.net == "alex":
            side1 = (self.size + 4 - 11) // 4 + 1  # conv 11x11 stride 4 pad 2
            side2 = (side1 - 3) // 2 + 1  # max pool 3 stride 2
            side3 = (side2 - 3) // 2 + 1
            sides = (side1, side2, side3, side3, side3)
        else:
            sides = tuple(self.size // 2**i for i in range(5))
        return sum(c * s * s for c, s in zip(self._channels(), sides))

    def _channels(self) -> tuple[int, ...]:
        return (64, 192, 384, 256, 256) if self.net == "alex" else (64, 128, 256, 512, 512)

    def options(self) -> dict:
        return {"net": self.net, "size": self.size}

    def resolve_weights(self) -> str | None:
        path = super().resolve_weights()
        heads = find_weights(self.heads_file, self.explicit_heads, download=self.download)
        self.heads_path = str(heads)
        self.heads_sha256 = file_sha256(heads)
        return path

    def weights_identity(self) -> str:
        # Both files shape the embedding: the cache key covers the backbone and the heads.
        backbone = super().weights_identity()
        return hashlib.sha256(f"{backbone}|{self.heads_sha256}".encode()).hexdigest()

    def build(self, weights_path: str | None) -> nn.Module:
        net = LPIPSNet(self.net)
        load_into(net.backbone, load_state_dict(weights_path), f"torchvision {self.net}", weights_path)
        heads_state = load_state_dict(self.heads_path)
        heads = [heads_state.get(f"lin{i}.model.1.weight") for i in range(5)]
        if any(h is None for h in heads) or [h.shape[1] for h in heads] != list(self._channels()):
            raise ValueError(f"{self.heads_path} does not hold LPIPS v0.1 {self.net} heads (lin0..lin4.model.1.weight)")
        net.set_heads(heads)
        return net

    def embed(self, model: nn.Module, images: Tensor) -> Tensor:
        return model(images)

    def provenance(self) -> dict:
        record = super().provenance()
        record["weights_sha256"] = self.weights_sha256  # the backbone file's own hash
        record["heads_file"] = self.heads_path
        record["heads_sha256"] = self.heads_sha256
        return record
