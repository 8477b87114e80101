"""The downstream classifier: any timm backbone, optionally with a real-vs-synthetic adversary.

Weights: a local file (``.safetensors``; ``.pth``/``.bin`` read with ``weights_only=True``),
timm's hub weights when the user asks for them and they are reachable, or random
initialisation — never a silent substitute. A checkpoint's classifier head (ImageNet's 1000
classes) is dropped and a new one sized to the task is created.

Domain-adversarial training (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by
Backpropagation"): a small head predicts real vs synthetic from the pooled features; its
gradient is reversed (times λ) before it reaches the backbone, which so learns features that
do not tell the two apart — the classifier cannot lean on generator artefacts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class BackboneError(ValueError):
    """A backbone name or weight file that cannot be used; the message says how to fix it."""


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:  # noqa: D102
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-weight`` backward."""
    return _ReverseGradient.apply(x, weight)


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local file: safetensors, or a torch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(
            f"backbone weights {path} do not exist: download them where you have network (e.g. from the timm model's "
            "Hugging Face page, file model.safetensors) and set downstream.pretrained to that path, or leave it empty "
            "for random initialisation"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


class Classifier(nn.Module):
    """A timm backbone with a task head, and an optional real-vs-synthetic head."""

    def __init__(self, backbone: nn.Module, adversarial: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.domain_head = nn.Linear(backbone.num_features, 1) if adversarial else None

    def forward(self, images: Tensor, reverse_weight: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """Class logits ``(B, C)`` and, with a domain head, real-vs-synthetic logits ``(B,)``."""
        features = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)  # (B, F)
        logits = self.backbone.get_classifier()(features)  # (B, C)
        if self.domain_head is None:
            return logits, None
        return logits, self.domain_head(reverse_gradient(features, reverse_weight)).squeeze(1)


def build_classifier(backbone: str, num_classes: int, pretrained: str = "", adversarial: bool = False) -> Classifier:
    """A :class:`Classifier` on timm's ``backbone`` with ``num_classes`` outputs."""
    import timm

    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone.split('.')[0][:6]}*")[:8]
        raise BackboneError(f"downstream.backbone: timm has no model {backbone!r}; similar: {', '.join(close) or 'none'}")
    if pretrained == "hub":
        try:
            model = timm.create_model(backbone, pretrained=True, num_classes=num_classes)
        except Exception as err:  # network, cache or name: say which and how to go on
            raise BackboneError(
                f"could not load timm's hub weights of {backbone} ({type(err).__name__}: {err}); download them where "
                "you have network and set downstream.pretrained to the local file"
            ) from err
        return Classifier(model, adversarial)
    model = timm.create_model(backbone, pretrained=False)
    if pretrained:
        state = read_weights(pretrained)
        head = model.get_classifier()
        head_keys = {f"{name}" for name, _ in model.named_parameters() if any(p is _ for p in head.parameters())}
        state = {k: v for k, v in state.items() if k not in head_keys}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in head_keys]
        if missing or unexpected:
            raise BackboneError(
                f"{pretrained} does not fit timm's {backbone}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    model.reset_classifier(num_classes)
    return Classifier(model, adversarial)
