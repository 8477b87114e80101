"""LoKr (LyCORIS): a Kronecker product of a small matrix and a (low-rank) larger one.

    train:
      method: lokr
      options: {rank: 8, alpha: 8, decompose_factor: -1, targets: attention}

Export: a peft adapter folder per adapted network (``unet/adapter_model.safetensors`` +
``adapter_config.json``), loaded with ``peft.PeftModel.from_pretrained(pipe.unet, "OUT/unet")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairsynth.config import ConfigError, knob
from fairsynth.methods import METHODS
from fairsynth.methods._adapter import AdapterConfig, AdapterMethod, check_dropouts, check_rank_alpha


@dataclass
class LoKrConfig(AdapterConfig):
    """LoKr: ``delta W = alpha / rank * kron(W1, B2 A2)``."""

    rank: int = knob(8, "Rank of the decomposed Kronecker factor(s).")
    alpha: float | None = knob(None, "Scale alpha / rank of the update; None: equal to rank.")
    rank_dropout: float = knob(0.0, "Dropout over the rank dimension during training.")
    module_dropout: float = knob(0.0, "Probability of skipping a whole adapted layer in a training step.")
    decompose_both: bool = knob(False, "Decompose the small Kronecker factor into a low-rank product too.")
    decompose_factor: int = knob(-1, "Size of the small factor's side; -1: as square as the layer allows.")
    use_effective_conv2d: bool = knob(False, "Parameter-efficient decomposition for k x k convolutions.")
    init: bool = knob(True, "true: the update starts at zero; false: random (for tests).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rank_alpha(self.rank, self.alpha)
        check_dropouts(rank_dropout=self.rank_dropout, module_dropout=self.module_dropout)
        if self.decompose_factor == 0 or self.decompose_factor < -1:
            raise ConfigError(f"decompose_factor must be -1 or > 0, got {self.decompose_factor}")


@METHODS.register("lokr", help="LoKr (peft): Kronecker-product updates; peft adapter folders")
class LoKr(AdapterMethod):
    """Low-rank Kronecker product adaptation (LyCORIS LoKr) through peft."""

    Config = LoKrConfig

    def peft_config(self, target_names: list[str], component: str) -> Any:
        from peft import LoKrConfig as PeftLoKrConfig

        return PeftLoKrConfig(
            r=self.config.rank,
            alpha=self.config.alpha if self.config.alpha is not None else self.config.rank,
            rank_dropout=self.config.rank_dropout,
            module_dropout=self.config.module_dropout,
            decompose_both=self.config.decompose_both,
            decompose_factor=self.config.decompose_factor,
            use_effective_conv2d=self.config.use_effective_conv2d,
            init_weights=self.config.init,
            target_modules=target_names,
        )
