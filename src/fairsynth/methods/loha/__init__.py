"""LoHa (Hyeon-Woo et al. 2022, FedPara; LyCORIS): a Hadamard product of two low-rank updates.

    train:
      method: loha
      options: {rank: 8, alpha: 8, targets: locon}

Export: a peft adapter folder per adapted network (``unet/adapter_model.safetensors`` +
``adapter_config.json``), loaded with ``peft.PeftModel.from_pretrained(pipe.unet, "OUT/unet")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairsynth.config import knob
from fairsynth.methods import METHODS
from fairsynth.methods._adapter import AdapterConfig, AdapterMethod, check_dropouts, check_rank_alpha


@dataclass
class LoHaConfig(AdapterConfig):
    """LoHa: ``delta W = alpha / rank * (B1 A1) * (B2 A2)`` (element-wise product)."""

    rank: int = knob(8, "Rank of each of the two low-rank factors.")
    alpha: float | None = knob(None, "Scale alpha / rank of the update; None: equal to rank.")
    rank_dropout: float = knob(0.0, "Dropout over the rank dimension during training.")
    module_dropout: float = knob(0.0, "Probability of skipping a whole adapted layer in a training step.")
    use_effective_conv2d: bool = knob(False, "FedPara's parameter-efficient decomposition for k x k convolutions.")
    init: bool = knob(True, "true: the update starts at zero; false: random (for tests).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rank_alpha(self.rank, self.alpha)
        check_dropouts(rank_dropout=self.rank_dropout, module_dropout=self.module_dropout)


@METHODS.register("loha", help="LoHa (peft): Hadamard product of low-rank updates; peft adapter folders")
class LoHa(AdapterMethod):
    """Low-rank Hadamard product adaptation (LyCORIS LoHa) through peft."""

    Config = LoHaConfig

    def peft_config(self, target_names: list[str], component: str) -> Any:
        from peft import LoHaConfig as PeftLoHaConfig

        return PeftLoHaConfig(
            r=self.config.rank,
            alpha=self.config.alpha if self.config.alpha is not None else self.config.rank,
            rank_dropout=self.config.rank_dropout,
            module_dropout=self.config.module_dropout,
            use_effective_conv2d=self.config.use_effective_conv2d,
            init_weights=self.config.init,
            target_modules=target_names,
        )
