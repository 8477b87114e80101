"""peft adapters in Stable Diffusion components: which modules to target, and injecting them.

Shared by every adapter method (LoRA, DoRA, LoHa, LoKr, OFT) and by pivotal tuning::

    from peft import LoraConfig
    from fairsynth.methods._peft import inject_adapter, target_modules

    target_modules(components.unet, "attention")          # ['down_blocks.0.attentions.0....attn1.to_q', ...]
    target_modules(components.unet, ["to_q", "ff.net.2"])  # an explicit list, matched as name suffixes
    injected = inject_adapter(
        components,
        lambda names, component: LoraConfig(r=8, lora_alpha=8, target_modules=names),
        targets="attention",
        apply_to="both",
    )
    # {"unet": [...module names...], "text_encoder": [...], "text_encoder_2": [...] (SDXL)}

A target is a preset name (:data:`PRESETS`) or a list of module names; a list entry matches a
module whose dotted name equals it or ends with ``"." + entry`` (peft's own rule), so
``"to_q"``, ``"attn2.to_q"`` and a full path all work. An entry that matches nothing is a
:class:`~fairsynth.methods.base.MethodError` listing the names that exist.

Every adapter is injected under the name :data:`ADAPTER_NAME` so that parameters, state dicts
and exports find it again.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Literal

from torch import nn

from fairsynth.methods.base import Components, MethodError

#: peft adapter name used for everything fairsynth injects.
ADAPTER_NAME = "fairsynth"

ApplyTo = Literal["unet", "text_encoder", "both"]
Targets = str | list[str]

#: Layer types peft's LoRA/LoHa/LoKr/OFT can wrap in SD components.
ADAPTABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

_UNET_ATTENTION = r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$"
_UNET_CROSS_ATTENTION = r"\.attn2\.(to_q|to_k|to_v|to_out\.0)$"
_UNET_FEED_FORWARD = r"\.ff\.net\.(0\.proj|2)$"
_UNET_CONVOLUTIONS = (
    r"\.resnets\.\d+\.(conv1|conv2|conv_shortcut)$",
    r"\.attentions\.\d+\.(proj_in|proj_out)$",
    r"\.(downsamplers|upsamplers)\.\d+\.conv$",
)
_TEXT_ATTENTION = r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$"
_TEXT_FEED_FORWARD = r"\.mlp\.(fc1|fc2)$"

#: Preset name -> network family ("unet" / "text_encoder") -> regexes over dotted module names
#: (matched with a leading "." so that top-level names match too). A preset missing a family
#: does not apply to it.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # q/k/v/out of every attention (self- and cross-); the diffusers LoRA scripts' default.
    "attention": {"unet": (_UNET_ATTENTION,), "text_encoder": (_TEXT_ATTENTION,)},
    # cross-attention only (attn2): what text conditioning flows through.
    "cross_attention": {"unet": (_UNET_CROSS_ATTENTION,)},
    "attention_ff": {
        "unet": (_UNET_ATTENTION, _UNET_FEED_FORWARD),
        "text_encoder": (_TEXT_ATTENTION, _TEXT_FEED_FORWARD),
    },
    # LoCon (kohya's conv_dim / LyCORIS): attention + feed-forward + the convolutions of
    # resnets, transformer in/out projections, down- and upsamplers.
    "locon": {
        "unet": (_UNET_ATTENTION, _UNET_FEED_FORWARD, *_UNET_CONVOLUTIONS),
        "text_encoder": (_TEXT_ATTENTION, _TEXT_FEED_FORWARD),
    },
}

# Containers whose indexed children repeat; a module's short name is what follows the last one.
_CONTAINERS = re.compile(r"^(?:.*\.)?(?:transformer_blocks|resnets|attentions|downsamplers|upsamplers|layers)\.\d+\.")


def family(component: str) -> str:
    """``"unet"`` or ``"text_encoder"`` (both SDXL text encoders share the text presets)."""
    return "text_encoder" if component.startswith("text_encoder") else component


def adapted_components(components: Components, apply_to: ApplyTo) -> list[str]:
    """Component names an ``apply_to`` value covers: unet, text_encoder (+ text_encoder_2 on SDXL)."""
    names = []
    if apply_to in ("unet", "both"):
        names.append("unet")
    if apply_to in ("text_encoder", "both"):
        names.append("text_encoder")
        if len(components.text_encoders) > 1:
            names.append("text_encoder_2")
    return names


def adaptable_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Dotted name -> Linear/Conv2d layer, for every layer an adapter can wrap.

    Layers already wrapped by peft count under their own name (their base layer); peft's
    internal sub-layers (``lora_A``, ...) do not count.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: dict[str, nn.Module] = {}
    wrapped: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix + ".") for prefix in wrapped):
            continue
        if isinstance(child, BaseTunerLayer):
            wrapped.append(name)
            found[name] = child.get_base_layer()
        elif isinstance(child, ADAPTABLE_TYPES) and name:
            found[name] = child
    return found


def short_name(name: str) -> str:
    """The part of a module name after its last repeated block: ``attn1.to_q``, ``ff.net.2``, ``conv1``."""
    return _CONTAINERS.sub("", name)


def _available(names: Iterable[str]) -> str:
    return ", ".join(sorted({short_name(n) for n in names}))


def target_modules(module: nn.Module, targets: Targets, component: str = "unet") -> list[str]:
    """Full dotted names of the layers of ``module`` that ``targets`` selects.

    Args:
        module: a UNet or text encoder.
        targets: a preset name (:data:`PRESETS`) or a list of module names / name suffixes.
        component: ``unet``, ``text_encoder`` or ``text_encoder_2``; picks the preset family.

    Raises:
        MethodError: unknown preset, a preset without a rule for this component, a list
            entry that matches no Linear/Conv2d layer (the message lists those that exist),
            or nothing selected at all.
    """
    layers = adaptable_modules(module)
    if isinstance(targets, str):
        if targets not in PRESETS:
            raise MethodError(f"unknown target preset {targets!r}; presets: {', '.join(PRESETS)}")
        rules = PRESETS[targets].get(family(component))
        if rules is None:
            raise MethodError(f"target preset {targets!r} has no rule for the {component}; "
                              f"it applies to: {', '.join(PRESETS[targets])}")
        patterns = [re.compile(rule) for rule in rules]
        selected = [name for name in layers if any(p.search("." + name) for p in patterns)]
        if not selected:
            raise MethodError(f"target preset {targets!r} selects no layer of the {component}; "
                              f"its layers: {_available(layers)}")
        return selected
    selected, unknown = [], []
    for entry in targets:
        matches = [name for name in layers if name == entry or name.endswith("." + entry)]
        if not matches:
            unknown.append(entry)
        selected.extend(m for m in matches if m not in selected)
    if unknown:
        raise MethodError(
            f"unknown target module{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"in the {component}; available: {_available(layers)}"
        )
    return selected


def resolve_targets(components: Components, targets: Targets, apply_to: ApplyTo) -> dict[str, list[str]]:
    """Target layer names per adapted component (see :func:`target_modules`).

    With an explicit list and several components, each entry must match in at least one of
    them and each component must get at least one layer, so ``["to_q", "q_proj"]`` adapts the
    UNet's queries and the text encoders' queries.
    """
    named = components.modules()
    names = adapted_components(components, apply_to)
    if isinstance(targets, str):
        return {name: target_modules(named[name], targets, name) for name in names}
    resolved: dict[str, list[str]] = {}
    matched: set[str] = set()
    for name in names:
        layers = adaptable_modules(named[name])
        entries = [e for e in targets if any(n == e or n.endswith("." + e) for n in layers)]
        matched.update(entries)
        if not entries:
            raise MethodError(
                f"no target module in {targets} matches a layer of the {name}; available: {_available(layers)}"
            )
        resolved[name] = target_modules(named[name], entries, name)
    unknown = [e for e in targets if e not in matched]
    if unknown:
        available = "; ".join(f"{n}: {_available(adaptable_modules(named[n]))}" for n in names)
        raise MethodError(
            f"unknown target module{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"available: {available}"
        )
    return resolved


PeftConfigFactory = Callable[[list[str], str], Any]


def inject_adapter(
    components: Components,
    peft_config_factory: PeftConfigFactory,
    targets: Targets,
    apply_to: ApplyTo,
    adapter_name: str = ADAPTER_NAME,
) -> dict[str, list[str]]:
    """Inject a peft adapter into the UNet and/or text encoder(s), in place.

    Args:
        components: the pipeline pieces; modified in place.
        peft_config_factory: ``(target module names, component name) -> PeftConfig`` (a
            ``LoraConfig``, ``LoHaConfig``, ...); called once per adapted component.
        targets: preset name or module-name list (see :func:`target_modules`).
        apply_to: ``unet``, ``text_encoder`` (both encoders on SDXL) or ``both``.
        adapter_name: peft adapter name.

    Returns:
        ``{component name: [adapted module names]}``.

    Diffusers models get the adapter through ``add_adapter`` (as diffusers' LoRA training
    scripts do, so pipeline-level adapter switches see it); text encoders through peft's
    ``inject_adapter_in_model`` (transformers' own ``add_adapter`` refuses peft < 0.22).
    After injection only adapter weights require gradients.
    """
    from diffusers import ModelMixin
    from peft import inject_adapter_in_model

    resolved = resolve_targets(components, targets, apply_to)
    named = components.modules()
    for name, module_names in resolved.items():
        module = named[name]
        config = peft_config_factory(module_names, name)
        if isinstance(module, ModelMixin):
            module.add_adapter(config, adapter_name=adapter_name)
        else:
            inject_adapter_in_model(config, module, adapter_name=adapter_name)
    return resolved


def is_adapter_parameter(name: str, adapter_name: str = ADAPTER_NAME) -> bool:
    """True for a parameter peft created for ``adapter_name`` (``...lora_A.<adapter>.weight``,
    ``...hada_w1_a.<adapter>``, ``...oft_R.<adapter>.weight``)."""
    parts = name.split(".")
    return adapter_name in parts[:-1] or parts[-1] == adapter_name


def adapter_parameters(module: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, nn.Parameter]:
    """Name -> parameter of one adapter in ``module``."""
    return {n: p for n, p in module.named_parameters() if is_adapter_parameter(n, adapter_name)}


def base_parameters(module: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, nn.Parameter]:
    """Name -> parameter of the original network (everything that is not the adapter)."""
    return {n: p for n, p in module.named_parameters() if not is_adapter_parameter(n, adapter_name)}


def diffusers_name(param_name: str) -> str:
    """A base parameter's name as the unwrapped network spells it (drops peft's ``base_layer``)."""
    return param_name.replace(".base_layer.", ".")


def injected_components(components: Components, adapter_name: str = ADAPTER_NAME) -> dict[str, nn.Module]:
    """Components carrying ``adapter_name``."""
    return {
        name: module
        for name, module in components.modules().items()
        if adapter_name in getattr(module, "peft_config", {})
    }


def peft_layers(module: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, Any]:
    """Module name -> peft tuner layer holding ``adapter_name``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        name: child
        for name, child in module.named_modules()
        if isinstance(child, BaseTunerLayer) and adapter_name in _adapter_keys(child)
    }


def _adapter_keys(layer: Any) -> list[str]:
    for attr in layer.adapter_layer_names:
        container = getattr(layer, attr, None)
        if container is not None and hasattr(container, "keys"):
            return list(container.keys())
    return []

