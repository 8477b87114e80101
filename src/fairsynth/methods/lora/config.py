"""Options of LoRA (Hu et al. 2021) and, through subclassing, DoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fairsynth.config import ConfigError, knob
from fairsynth.methods._adapter import AdapterConfig

#: peft ``init_lora_weights`` values that need no data: True (kaiming A, zero B), False
#: (random A and B: the adapter changes the model from step 0; for tests), gaussian,
#: orthogonal (B A = 0 with orthogonal factors), pissa / olora (principal part of the base
#: weight moved into the adapter; exported as an equivalent LoRA over the original weights).
LoraInit = bool | Literal["gaussian", "orthogonal", "pissa", "olora"]

#: Inits that rewrite the base weights (their export converts back to the original base).
RESIDUAL_INITS = ("pissa", "olora")


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA: low-rank update ``alpha / rank * B A`` of each targeted layer."""

    rank: int = knob(8, "LoRA rank r; higher adapts more and costs more memory.")
    alpha: float | None = knob(
        None, "LoRA alpha; the update is scaled by alpha / rank (rslora: alpha / sqrt(rank)). "
        "None: equal to rank (scale 1). kohya's common choice is alpha = rank / 2 or 1."
    )
    dropout: float = knob(0.0, "Dropout on the LoRA branch's input during training.")
    init: LoraInit = knob(
        True, "peft init_lora_weights: true (A kaiming, B zero), false (both random), gaussian, "
        "orthogonal (even rank), pissa or olora (Linear layers only; exported as plain LoRA of rank 2r)."
    )
    rslora: bool = knob(False, "Rank-stabilised LoRA (Kalajdzievski 2023): scale alpha / sqrt(rank).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank <= 0:
            raise ConfigError(f"rank must be > 0, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init == "orthogonal" and self.rank % 2:
            raise ConfigError(f"init orthogonal needs an even rank, got {self.rank}")
        if self.init in RESIDUAL_INITS and any(stage.train != "adapters" for stage in self.unfreeze):
            raise ConfigError(f"init {self.init} rewrites the base weights; it cannot be combined with unfreezing them")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)
