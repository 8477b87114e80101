"""OFT (Qiu et al. 2023): a learned block-diagonal orthogonal rotation of each layer's input.

    train:
      method: oft
      options: {block_size: 32, targets: attention}

peft's OFT wraps Linear and Conv2d layers (not dilated convolutions). A layer's input size —
``in_features``, or ``in_channels * k * k`` for a convolution — must be a multiple of
``block_size`` (or of ``blocks``); peft would silently pick another size, fairsynth refuses.
(peft's ``r`` is the number of blocks, so OFT has no rank or alpha.)

Export: a peft adapter folder per adapted network (``unet/adapter_model.safetensors`` +
``adapter_config.json``), loaded with ``peft.PeftModel.from_pretrained(pipe.unet, "OUT/unet")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from fairsynth.config import ConfigError, knob
from fairsynth.methods import METHODS
from fairsynth.methods._adapter import AdapterConfig, AdapterMethod, check_dropouts
from fairsynth.methods._peft import adaptable_modules
from fairsynth.methods.base import Components, MethodError


DEFAULT_BLOCK_SIZE = 32


@dataclass
class OFTConfig(AdapterConfig):
    """OFT: ``W' = W R`` with ``R`` block-diagonal orthogonal (Cayley parametrisation)."""

    block_size: int | None = knob(
        None, "Side of each orthogonal block; bigger rotates more freely and trains more parameters. "
        "None: 32, unless `blocks` is given."
    )
    blocks: int | None = knob(None, "Number of orthogonal blocks per layer instead of a block size (peft's r).")
    coft: bool = knob(False, "Constrained OFT: keep R within `eps` of the identity.")
    eps: float = knob(6e-5, "COFT's bound on the rotation (only with coft).")
    block_share: bool = knob(False, "Share one block across the diagonal (fewer parameters).")
    module_dropout: float = knob(0.0, "Probability of replacing blocks by the identity in a training step.")
    cayley_neumann: bool = knob(False, "Approximate the Cayley transform by a Neumann series (faster, less exact).")
    init: bool = knob(True, "true: start at the identity rotation; false: random (for tests).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size is not None and self.blocks is not None:
            raise ConfigError(f"give block_size ({self.block_size}) or blocks ({self.blocks}), not both")
        for name in ("block_size", "blocks"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.eps <= 0:
            raise ConfigError(f"eps must be > 0, got {self.eps}")
        check_dropouts(module_dropout=self.module_dropout)


def rotated_size(layer: nn.Module) -> int:
    """The size OFT rotates: in_features, or in_channels * kh * kw for a convolution."""
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    return layer.in_features


@METHODS.register("oft", help="OFT (peft): orthogonal block rotations of Linear/Conv2d inputs; peft adapter folders")
class OFT(AdapterMethod):
    """Orthogonal fine-tuning through peft."""

    Config = OFTConfig

    def check_layers(self, components: Components, targets: dict[str, list[str]]) -> None:
        named = components.modules()
        size, what = (self.config.blocks, "blocks") if self.config.blocks else (self.block_size, "block_size")
        for component, names in targets.items():
            layers = adaptable_modules(named[component])
            dilated = [n for n in names if isinstance(layers[n], nn.Conv2d) and layers[n].dilation[0] > 1]
            if dilated:
                raise MethodError(f"OFT cannot adapt dilated convolutions: {', '.join(dilated)}")
            misfits = [f"{n} ({rotated_size(layers[n])})" for n in names if rotated_size(layers[n]) % size]
            if misfits:
                raise MethodError(
                    f"OFT {what} {size} does not divide the input size of {len(misfits)} {component} layer(s): "
                    f"{', '.join(misfits[:5])}{' ...' if len(misfits) > 5 else ''}; choose a divisor or other targets"
                )

    @property
    def block_size(self) -> int:
        """The block size in use (0 when the number of blocks is given instead)."""
        if self.config.blocks:
            return 0
        return self.config.block_size if self.config.block_size is not None else DEFAULT_BLOCK_SIZE

    def peft_config(self, target_names: list[str], component: str) -> Any:
        from peft import OFTConfig as PeftOFTConfig

        return PeftOFTConfig(
            r=self.config.blocks or 0,
            oft_block_size=self.block_size,
            coft=self.config.coft,
            eps=self.config.eps,
            block_share=self.config.block_share,
            module_dropout=self.config.module_dropout,
            use_cayley_neumann=self.config.cayley_neumann,
            init_weights=self.config.init,
            target_modules=target_names,
        )
