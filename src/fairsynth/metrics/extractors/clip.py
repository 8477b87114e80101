"""OpenAI CLIP image (and prompt) embeddings through open_clip, offline.

Three backbones are registered: ``clip`` (ViT-L/14, the backbone of torchmetrics' ``CLIPScore``),
``clip-b32`` (ViT-B/32, the backbone of Hessel et al.'s CLIP-S) and ``clip-l14-336`` (ViT-L/14 at
336 px, the network CMMD is defined on, Jayasumana et al. 2024). The weights are the open_clip
safetensors files on the Hugging Face Hub (``timm/vit_*_clip_{224,336}.openai``), loaded
into a network open_clip builds from its bundled config; prompts are tokenised by open_clip's
bundled BPE vocabulary, so nothing is downloaded once the weights are here.

Images follow the shared size policy (whole image, Lanczos, to 224×224 or 336×336) and are then
scaled to [0, 1] and normalised with CLIP's mean and std. CLIP's own preprocessing (bicubic
resize of the short side and a centre crop) is not used; for square images the two differ only
in the resize filter (the CMMD reference code resizes bicubically to 336×336: the same kind of
small, recorded difference). Features are the projected image embeddings (not normalised; metrics normalise).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from fairsynth.metrics.extractors import EXTRACTORS
from fairsynth.metrics.extractors.base import Extractor
from fairsynth.metrics.extractors.weights import WeightsFile, load_into, load_state_dict, register_weights

#: CLIP's image normalisation (OpenAI), for [0, 1] inputs.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CLIP_L14_WEIGHTS = register_weights(
    WeightsFile(
        name="clip",
        filename="open_clip_vit_l_14_openai.safetensors",
        what="CLIP ViT-L/14 (OpenAI weights, open_clip format)",
        hf_repo="timm/vit_large_patch14_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        size="1.7 GB",
    )
)
CLIP_B32_WEIGHTS = register_weights(
    WeightsFile(
        name="clip-b32",
        filename="open_clip_vit_b_32_openai.safetensors",
        what="CLIP ViT-B/32 (OpenAI weights, open_clip format)",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        size="605 MB",
    )
)

CLIP_L14_336_WEIGHTS = register_weights(
    WeightsFile(
        name="clip-l14-336",
        filename="open_clip_vit_l_14_336_openai.safetensors",
        what="CLIP ViT-L/14@336 (OpenAI weights, open_clip format; CMMD's network)",
        hf_repo="timm/vit_large_patch14_clip_336.openai",
        hf_filename="open_clip_model.safetensors",
        size="1.7 GB",
    )
)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs a warning when it builds a network without its own pretrained weights;
    ours are loaded right after."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class CLIPExtractor(Extractor):
    """Base of the CLIP extractors; subclasses name the open_clip model and weights."""

    model_name: str = ""
    input_size = (224, 224)

    def build(self, weights_path: str | None) -> nn.Module:
        import open_clip

        with _quiet_open_clip():
            model = open_clip.create_model(self.model_name, pretrained=None)
        load_into(model, load_state_dict(weights_path), f"open_clip {self.model_name}", weights_path)
        return model

    def embed(self, model: nn.Module, images: Tensor) -> Tensor:
        x = images.to(torch.float32) / 255.0  # (B, 3, 224, 224)
        mean = torch.tensor(CLIP_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=x.device)[None, :, None, None]
        return model.encode_image((x - mean) / std)  # (B, d)

    @torch.no_grad()
    def encode_text(self, prompts: list[str], batch_size: int = 64) -> Tensor:
        """Projected text embeddings ``(N, d)`` float32 of ``prompts`` (truncated to 77 tokens)."""
        import open_clip

        model = self.load()
        tokenizer = open_clip.get_tokenizer(self.model_name)
        out = []
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[start : start + batch_size]).to(self.device)  # (b, 77)
            out.append(model.encode_text(tokens).to(torch.float32).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)


@EXTRACTORS.register("clip", help="OpenAI CLIP ViT-L/14 via open_clip (torchmetrics CLIPScore's backbone), 768-d image/prompt embeddings")
class CLIPViTL14(CLIPExtractor):
    """OpenAI CLIP ViT-L/14."""

    name = "clip"
    model_name = "ViT-L-14-quickgelu"
    feature_dim = 768
    implementation = "open_clip ViT-L-14-quickgelu with OpenAI weights; projected image embedding, CLIP mean/std normalisation"
    weights_file = CLIP_L14_WEIGHTS


@EXTRACTORS.register("clip-b32", help="OpenAI CLIP ViT-B/32 via open_clip (Hessel et al.'s CLIP-S backbone), 512-d")
class CLIPViTB32(CLIPExtractor):
    """OpenAI CLIP ViT-B/32."""

    name = "clip-b32"
    model_name = "ViT-B-32-quickgelu"
    feature_dim = 512
    implementation = "open_clip ViT-B-32-quickgelu with OpenAI weights; projected image embedding, CLIP mean/std normalisation"
    weights_file = CLIP_B32_WEIGHTS


@EXTRACTORS.register(
    "clip-l14-336", help="OpenAI CLIP ViT-L/14@336 via open_clip (CMMD's network, Jayasumana et al. 2024), 336 px, 768-d"
)
class CLIPViTL14At336(CLIPExtractor):
    """OpenAI CLIP ViT-L/14 at 336 px: the embeddings CMMD is defined on."""

    name = "clip-l14-336"
    model_name = "ViT-L-14-336-quickgelu"
    input_size = (336, 336)
    feature_dim = 768
    implementation = (
        "open_clip ViT-L-14-336-quickgelu with OpenAI weights, 336 px; projected image embedding, CLIP mean/std "
        "normalisation"
    )
    weights_file = CLIP_L14_336_WEIGHTS
