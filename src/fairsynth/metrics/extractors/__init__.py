"""Feature extractors: each module in this package registers one or more in :data:`EXTRACTORS`.

``fairsynth ls extractors`` lists them; a metric names one as ``metric@extractor``
(``fd@inception`` is FID, ``fd@dinov2`` is FD-DINOv2). Weights are found by the policy in
:mod:`.weights` (``fairsynth weights list`` shows what is on this machine).

=============  ==============================================================================
inception      FID's Inception v3 (TF 2015-12-05 graph, pytorch-fid / torch-fidelity weights)
clip           OpenAI CLIP ViT-L/14 through open_clip (torchmetrics' CLIPScore backbone)
clip-b32       OpenAI CLIP ViT-B/32 through open_clip (Hessel et al.'s CLIP-S backbone)
clip-l14-336   OpenAI CLIP ViT-L/14@336 through open_clip (CMMD's network, Jayasumana et al. 2024)
dinov2         DINOv2 ViT-L/14 through timm (FD-DINOv2, Stein et al. 2023)
classifier     your own classifier (a timm architecture + your state dict): domain features
lpips          LPIPS v0.1 embeddings (AlexNet + the lpips package's heads)
random         tiny network with random weights — tests and benchmarks only, labelled so
=============  ==============================================================================
"""

from __future__ import annotations

from fairsynth.metrics.extractors.base import IMAGE_SIZE_POLICY, IMAGE_SIZE_POLICY_ID, Extractor, prepare_image
from fairsynth.metrics.extractors.weights import KNOWN_WEIGHTS, WeightsFile, WeightsNotFound
from fairsynth.registry import Registry

EXTRACTORS: Registry[type[Extractor]] = Registry("extractors", package="fairsynth.metrics.extractors")


def create_extractor(name: str, weights: str | None = None, device: str = "cpu", download: bool = True, **options) -> Extractor:
    """An extractor by registry name; unknown options are a ``TypeError`` naming the valid ones."""
    import inspect

    cls = EXTRACTORS.get(name)
    try:
        return cls(weights=weights, device=device, download=download, **options)
    except TypeError as err:
        valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "weights", "device", "download")]
        raise TypeError(f"extractor {name!r}: {err}; its options: {', '.join(valid) or '(none)'}") from None


def known_weights() -> dict[str, WeightsFile]:
    """Every registered weights file (imports every extractor so that each registers its own)."""
    EXTRACTORS.discover()
    return dict(sorted(KNOWN_WEIGHTS.items()))


__all__ = [
    "EXTRACTORS", "Extractor", "IMAGE_SIZE_POLICY", "IMAGE_SIZE_POLICY_ID", "WeightsNotFound",
    "create_extractor", "known_weights", "prepare_image",
]
