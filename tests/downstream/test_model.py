"""The classifier: timm backbones, local weights without pickles, gradient reversal."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fairsynth.downstream.model import BackboneError, build_classifier, reverse_gradient


def test_reverse_gradient_is_identity_forward_and_negated_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, -0.5))


def test_domain_head_gradient_reaches_the_backbone_reversed():
    torch.manual_seed(0)
    model = build_classifier("test_resnet", 3, adversarial=True)
    images = torch.randn(2, 3, 32, 32)

    def backbone_grads(weight: float) -> list[torch.Tensor]:
        model.zero_grad()
        _, domain = model(images, reverse_weight=weight)  # (B,)
        domain.sum().backward()
        return [p.grad.clone() for p in model.backbone.parameters() if p.grad is not None]

    reversed_, plain = backbone_grads(1.0), backbone_grads(-1.0)  # weight -1: the gradient passes unchanged
    assert len(reversed_) == len(plain) > 0
    assert any(g.abs().sum() > 0 for g in plain)
    assert all(torch.allclose(r, -g, atol=1e-6) for r, g in zip(reversed_, plain))
    logits, domain = build_classifier("test_resnet", 3)(images)
    assert logits.shape == (2, 3) and domain is None


def _timm_state(name: str) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(123)
    return {k: v.contiguous() for k, v in timm.create_model(name, num_classes=1000).state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load_and_the_head_is_replaced(tmp_path, suffix):
    state = _timm_state("test_resnet")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    model = build_classifier("test_resnet", 4, str(path))
    loaded = model.backbone.state_dict()
    head = {k for k in state if k.startswith("fc.")}
    assert head and all(torch.equal(loaded[k], state[k]) for k in state if k not in head)
    assert loaded["fc.weight"].shape == (4, state["fc.weight"].shape[1])


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(_timm_state("test_vit"), str(path))
    with pytest.raises(BackboneError, match=r"does not fit timm's test_resnet: \d+ missing keys"):
        build_classifier("test_resnet", 4, str(path))


def test_missing_weight_file_and_unknown_backbone_say_what_to_do(tmp_path):
    with pytest.raises(BackboneError, match=r"nowhere\.safetensors do not exist: download them"):
        build_classifier("test_resnet", 4, str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(BackboneError, match="timm has no model 'resnet5000'"):
        build_classifier("resnet5000", 4)


def test_pickled_objects_in_a_torch_file_are_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": Evil()}}, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        build_classifier("test_resnet", 4, str(path))
