"""DINOv2 ViT-L/14 features through timm: the FD-DINOv2 network (Stein et al. 2023).

The weights are timm's ``vit_large_patch14_dinov2.lvd142m`` safetensors (trained at 518 px);
facebookresearch's original ``dinov2_vitl14_pretrain.pth`` layout loads too (timm converts it).
Images follow the shared size policy at 224×224, as in Stein et al.'s dgm-eval; the learned
position embedding (37×37 patches) is resampled once to 16×16 by timm's loader (bicubic,
antialiased), where the original code interpolates it at every call — a small, recorded
difference. Inputs are scaled to [0, 1] and normalised with ImageNet's mean and std; the feature
is the final-normed CLS token (1024-d).

The ``arch`` option takes another timm DINOv2 name (``vit_small_patch14_dinov2``, ...) with an
explicit weights file; the default file is the ViT-L/14 one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fairsynth.metrics.extractors import EXTRACTORS
from fairsynth.metrics.extractors.base import Extractor
from fairsynth.metrics.extractors.weights import WeightsFile, WeightsNotFound, load_into, load_state_dict, register_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_ARCH = "vit_large_patch14_dinov2"

DINOV2_WEIGHTS = register_weights(
    WeightsFile(
        name="dinov2",
        filename="timm_vit_large_patch14_dinov2_lvd142m.safetensors",
        what="DINOv2 ViT-L/14 (timm vit_large_patch14_dinov2.lvd142m)",
        hf_repo="timm/vit_large_patch14_dinov2.lvd142m",
        hf_filename="model.safetensors",
        size="1.2 GB",
    )
)


@EXTRACTORS.register("dinov2", help="DINOv2 ViT-L/14 via timm (FD-DINOv2), 224 px, 1024-d CLS token")
class DINOv2Extractor(Extractor):
    """DINOv2 CLS-token features."""

    name = "dinov2"
    input_size = (224, 224)
    weights_file = DINOV2_WEIGHTS

    def __init__(self, weights: str | None = None, device: str = "cpu", download: bool = True, arch: str = DEFAULT_ARCH) -> None:
        super().__init__(weights=weights, device=device, download=download)
        if "dinov2" not in arch:
            raise TypeError(f"arch must be a timm DINOv2 model name (e.g. {DEFAULT_ARCH}), got {arch!r}")
        self.arch = arch
        self.feature_dim = {"small": 384, "base": 768, "large": 1024, "giant": 1536}.get(arch.split("_")[1], 0)
        self.implementation = (
            f"timm {arch} (DINOv2), 224 px, position embedding resampled by timm's checkpoint_filter_fn "
            "(bicubic, antialias), ImageNet mean/std, final-norm CLS token"
        )
        if arch != DEFAULT_ARCH:
            self.weights_file = None  # only ViT-L/14 has a standard file; others need an explicit one

    def options(self) -> dict:
        return {"arch": self.arch}

    def resolve_weights(self) -> str | None:
        if self.weights_file is None and not self.explicit_weights:
            raise WeightsNotFound(f"dinov2 with arch {self.arch} needs an explicit weights file: evaluate.weights.dinov2=PATH")
        return super().resolve_weights()

    def build(self, weights_path: str | None) -> nn.Module:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        model = timm.create_model(self.arch, pretrained=False, num_classes=0, img_size=self.input_size[1])
        state_dict = checkpoint_filter_fn(load_state_dict(weights_path), model)
        load_into(model, state_dict, f"timm {self.arch}", weights_path)
        self.feature_dim = model.num_features
        return model

    def embed(self, model: nn.Module, images: Tensor) -> Tensor:
        x = images.to(torch.float32) / 255.0  # (B, 3, 224, 224)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
        tokens = model.forward_features((x - mean) / std)  # (B, 1 + 256, d), final norm applied
        return model.forward_head(tokens, pre_logits=True)  # (B, d): CLS token
