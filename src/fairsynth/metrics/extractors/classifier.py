"""Domain features from your own classifier — the one the synthetic data is meant to help.

ImageNet and CLIP features know little about dermoscopy; the downstream classifier's
penultimate layer does. This extractor builds a timm architecture (``arch``, default
``resnet50``), reads the number of classes from the state dict's classifier weight, loads your
weights (safetensors, or a tensors-only ``.pt``/``.pth`` read with ``weights_only=True``) and
returns the pre-logits features (``forward_head(pre_logits=True)``).

There is no standard file: ``evaluate.weights.classifier=PATH`` is required. Input size,
mean and std default to the architecture's timm pretrained config; set ``size`` (square side),
``mean`` and ``std`` when your classifier was trained otherwise.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fairsynth.metrics.extractors import EXTRACTORS
from fairsynth.metrics.extractors.base import Extractor
from fairsynth.metrics.extractors.weights import WeightsNotFound, load_into, load_state_dict


@EXTRACTORS.register("classifier", help="your downstream classifier (timm `arch` + your state dict): pre-logits domain features")
class ClassifierExtractor(Extractor):
    """Pre-logits features of a user's timm classifier."""

    name = "classifier"
    weights_file = None

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        download: bool = True,
        arch: str = "resnet50",
        size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(weights=weights, device=device, download=download)
        import timm

        if not timm.is_model(arch):
            raise TypeError(f"arch {arch!r} is not a timm architecture")
        self.arch = arch
        config = timm.models.get_pretrained_cfg(arch)
        config = config.to_dict() if config is not None else {}
        side = size or int(config.get("input_size", (3, 224, 224))[-1])
        self.input_size = (side, side)
        self.mean = tuple(mean or config.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(std or config.get("std", (0.229, 0.224, 0.225)))
        self.implementation = f"timm {arch} with the user's weights; pre-logits features, mean {self.mean}, std {self.std}"

    def options(self) -> dict:
        return {"arch": self.arch, "size": self.input_size[0], "mean": list(self.mean), "std": list(self.std)}

    def resolve_weights(self) -> str | None:
        if not self.explicit_weights:
            raise WeightsNotFound(
                "the classifier extractor needs your classifier's weights: evaluate.weights.classifier=PATH "
                f"(a state dict of a timm {self.arch})"
            )
        return super().resolve_weights()

    def build(self, weights_path: str | None) -> nn.Module:
        import timm

        state_dict = load_state_dict(weights_path)
        probe = timm.create_model(self.arch, pretrained=False, num_classes=0)
        head = probe.pretrained_cfg.get("classifier", "fc")
        head = head[0] if isinstance(head, (list, tuple)) else head
        head_weight = state_dict.get(f"{head}.weight")
        num_classes = int(head_weight.shape[0]) if head_weight is not None and head_weight.ndim == 2 else 0
        model = probe if num_classes == 0 else timm.create_model(self.arch, pretrained=False, num_classes=num_classes)
        load_into(model, state_dict, f"timm {self.arch}", weights_path)
        self.feature_dim = model.num_features
        return model

    def embed(self, model: nn.Module, images: Tensor) -> Tensor:
        x = images.to(torch.float32) / 255.0
        mean = torch.tensor(self.mean, device=x.device)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device)[None, :, None, None]
        return model.forward_head(model.forward_features((x - mean) / std), pre_logits=True)  # (B, d)
