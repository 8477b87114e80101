"""DoRA (Liu et al. 2024): LoRA on the direction of each weight plus a trained magnitude.

    train:
      method: dora
      options: {rank: 8, alpha: 8, targets: attention}

Same options as ``lora`` (pissa / olora inits excepted). Export: diffusers'
``pytorch_lora_weights.safetensors`` with the magnitude vectors
(``lora_magnitude_vector``) and ``use_dora`` in the metadata, loaded by
``pipe.load_lora_weights(out_dir)``. No kohya file: kohya / LyCORIS store DoRA's magnitude
differently (``dora_scale``), and a file that loads with the wrong magnitudes is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fairsynth.config import ConfigError
from fairsynth.methods import METHODS
from fairsynth.methods._export import DIFFUSERS_LORA_FILE, write_diffusers_lora
from fairsynth.methods.base import Components
from fairsynth.methods.lora import LoRA
from fairsynth.methods.lora.config import RESIDUAL_INITS, LoRAConfig


@dataclass
class DoRAConfig(LoRAConfig):
    """DoRA: LoRA options; the magnitude vector is always trained."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init in RESIDUAL_INITS:
            raise ConfigError(f"dora does not support init {self.init} (its magnitude is taken from the rewritten base)")


_NOTE = """
# Loading this DoRA adapter

`{diffusers}` holds diffusers / peft keys (`lora_A`, `lora_B`, `lora_magnitude_vector`) and
the LoraConfig (`use_dora: true`) in its metadata: `pipe.load_lora_weights("OUT")` on a
pipeline of the same base model. Text-encoder layers load through transformers' peft
integration: transformers >= 5 needs peft >= 0.22 for that.
"""


@METHODS.register("dora", help="DoRA (peft LoRA with use_dora): weight-decomposed LoRA; diffusers export")
class DoRA(LoRA):
    """Weight-decomposed low-rank adaptation (Liu et al. 2024)."""

    Config = DoRAConfig
    use_dora = True

    def check_kohya_names(self, components: Components, targets: dict[str, list[str]]) -> None:
        """DoRA writes no kohya file, so any layer will do."""

    def export_adapter(self, components: Components, out_dir: Path, name: str) -> dict[str, Path]:
        return {"diffusers": write_diffusers_lora(components, out_dir)}

    def loading_note(self, files: dict[str, Path], out_dir: Path) -> str:
        return _NOTE.format(diffusers=DIFFUSERS_LORA_FILE)
