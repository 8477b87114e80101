"""The real loading code of every standard extractor, offline, on state dicts of the right shape
with random values, handed over through each extractor's weights path; outputs compared with
an independent implementation where one exists (torch-fidelity, timm, open_clip, lpips)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from fairsynth.metrics.extractors import EXTRACTORS, create_extractor
from fairsynth.metrics.extractors.weights import (
    KNOWN_WEIGHTS,
    WeightsNotFound,
    find_weights,
    load_state_dict,
    locate,
)


# lpips builds torchvision's AlexNet with the deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:The parameter 'pretrained' is deprecated", "ignore:Arguments other than a weight enum")

def randomised(state_dict: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Same names and shapes, random values (BatchNorm variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            out[name] = tensor.clone()
        elif name.endswith("running_var"):
            out[name] = torch.rand(tensor.shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(tensor.shape, generator=g) * 0.05
    return out


def images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_every_extractor_is_registered():
    assert {"inception", "clip", "clip-b32", "clip-l14-336", "dinov2", "classifier", "lpips", "random"} <= set(EXTRACTORS.names())


def test_inception_from_the_fairsynth_weights_folder_equals_torch_fidelity(tmp_path, monkeypatch):
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # pytorch-fid builds its network as torchvision's Inception3 (1008 classes, no aux head),
    # so that architecture gives the file's names and shapes independently of ours.
    reference_layout = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    folder = tmp_path / "weights"
    folder.mkdir()
    path = folder / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(randomised(reference_layout.state_dict()), path)
    monkeypatch.setenv("FAIRSYNTH_WEIGHTS", str(folder))

    extractor = create_extractor("inception")
    batch = images(2, 299)
    ours = extractor(batch)
    assert ours.shape == (2, 2048) and torch.isfinite(ours).all()
    assert extractor.weights_path == str(path)

    # torch-fidelity loads with weights_only=False; this test makes it load tensors only.
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: original(f, map_location="cpu", weights_only=True))
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    monkeypatch.setattr(torch, "load", original)
    with torch.no_grad():
        (reference,) = theirs(batch)  # its TF-1.x bilinear resize of 299 -> 299 is the identity
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))

    record = extractor.provenance()
    assert record["weights_sha256"] and record["weights_reference"] == "pt_inception-2015-12-05-6726825d.pth"
    assert record["weights_match_reference"] is False and "not be comparable" in record["warning"]
    assert record["image_size_policy_id"] and "Lanczos" in record["image_size_policy"]


def test_inception_offline_without_weights_is_one_clear_error():
    extractor = create_extractor("inception")
    with pytest.raises(WeightsNotFound) as err:
        extractor(images(1, 299))
    message = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message and "offline" in message
    assert "fairsynth weights fetch inception --dir DIR" in message and "FAIRSYNTH_WEIGHTS" in message


def test_weights_lookup_order(tmp_path, monkeypatch):
    spec = KNOWN_WEIGHTS["inception"]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"torch-fidelity's name")
    assert locate(spec) == cache / "weights-inception-2015-12-05-6726825d.pth"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / spec.filename).write_bytes(b"fairsynth folder")
    monkeypatch.setenv("FAIRSYNTH_WEIGHTS", str(folder))
    assert locate(spec) == folder / spec.filename
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"explicit")
    assert find_weights(spec, explicit) == explicit
    with pytest.raises(WeightsNotFound, match="does not exist"):
        find_weights(spec, tmp_path / "nope.pth")


def test_weights_are_found_in_the_hugging_face_cache():
    spec = KNOWN_WEIGHTS["clip-b32"]
    cache = Path(os.environ["HF_HUB_CACHE"]) / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = cache / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("abc123")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    assert locate(spec) == snapshot / "open_clip_model.safetensors"


def test_pickles_with_more_than_tensors_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "thing": functools.partial(print, "hi")}, path)
    with pytest.raises(ValueError, match="not a tensors-only"):
        load_state_dict(path)


def test_clip_b32_loads_open_clip_safetensors_and_embeds_images_and_prompts(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    state = randomised(reference.state_dict(), seed=1)
    reference.load_state_dict(state)
    path = tmp_path / "open_clip_vit_b_32_openai.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    extractor = create_extractor("clip-b32", weights=str(path))
    batch = images(2, 224)
    ours = extractor(batch)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073))[None, :, None, None]
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711))[None, :, None, None]
    with torch.no_grad():
        expected = reference.encode_image((batch / 255.0 - mean) / std)
        expected_text = reference.encode_text(open_clip.get_tokenizer("ViT-B-32-quickgelu")(["a nevus", "a melanoma"]))
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(extractor.encode_text(["a nevus", "a melanoma"]), expected_text, atol=1e-5)
    assert extractor.provenance()["weights_match_reference"] is None  # no published hash to compare with


def test_dinov2_loads_a_518px_checkpoint_at_224(tmp_path):
    import timm
    from safetensors.torch import save_file

    arch = "vit_small_patch14_dinov2"  # the ViT-L/14 default takes the same code path (slow test below)
    trained_at_518 = timm.create_model(arch, pretrained=False, num_classes=0)  # pos_embed for 37x37 patches
    state = randomised(trained_at_518.state_dict(), seed=2)
    path = tmp_path / "dinov2_small.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    extractor = create_extractor("dinov2", weights=str(path), arch=arch)
    batch = images(2, 224)
    ours = extractor(batch)
    # timm's own pretrained-file loader at 224 px as the reference
    reference = timm.create_model(
        arch, pretrained=True, num_classes=0, img_size=224, pretrained_cfg_overlay={"file": str(path)}
    ).eval()
    mean = torch.tensor((0.485, 0.456, 0.406))[None, :, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[None, :, None, None]
    with torch.no_grad():
        expected = reference((batch / 255.0 - mean) / std)
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_dinov2_other_arch_needs_explicit_weights():
    with pytest.raises(WeightsNotFound, match="explicit weights"):
        create_extractor("dinov2", arch="vit_small_patch14_dinov2").load()


def test_classifier_features_are_pre_logits(tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    state = randomised(reference.state_dict(), seed=3)
    reference.load_state_dict(state)
    path = tmp_path / "derm_classifier.safetensors"
    save_file(state, str(path))
    extractor = create_extractor("classifier", weights=str(path), arch="resnet18", size=64)
    batch = images(2, 64)
    mean = torch.tensor((0.485, 0.456, 0.406))[None, :, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[None, :, None, None]
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features((batch / 255.0 - mean) / std), pre_logits=True)
    assert torch.allclose(extractor(batch), expected, atol=1e-5)
    assert extractor.feature_dim == 512


def test_classifier_without_weights_says_how_to_give_them():
    with pytest.raises(WeightsNotFound, match="evaluate.weights.classifier"):
        create_extractor("classifier", arch="resnet18").load()


def test_classifier_with_the_wrong_architecture_lists_what_does_not_fit(tmp_path):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=3).state_dict(), str(path))
    with pytest.raises(ValueError, match="does not hold timm resnet34 weights"):
        create_extractor("classifier", weights=str(path), arch="resnet34").load()


def test_lpips_embedding_distance_equals_the_lpips_package():
    import lpips
    import torchvision

    # The lpips package with a random AlexNet (no download) and its shipped heads.
    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    alexnet = torchvision.models.alexnet(weights=None)
    slices = [reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4, reference.net.slice5]
    for block in slices:
        for index, layer in block.named_children():
            alexnet.features[int(index)].load_state_dict(layer.state_dict())
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(alexnet.state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")  # where torchvision caches it

    extractor = create_extractor("lpips")
    x, y = images(3, 64, seed=1), images(3, 64, seed=2)
    ours = (extractor(x).double() - extractor(y).double()).square().sum(dim=1)
    with torch.no_grad():
        theirs = reference(x / 127.5 - 1.0, y / 127.5 - 1.0).flatten().double()
    assert extractor.feature_dim == 31872
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    record = extractor.provenance()
    assert record["heads_file"].endswith("alex.pth") and record["heads_sha256"]


def test_random_extractor_is_deterministic_and_labelled():
    a, b = create_extractor("random"), create_extractor("random")
    batch = images(4, 32)
    assert torch.equal(a(batch), b(batch))
    record = a.provenance()
    assert record["test_only"] is True and "RANDOM WEIGHTS" in record["warning"]
    assert record["weights_sha256"] == b.provenance()["weights_sha256"]


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="must be 32x32"):
        create_extractor("random")(images(1, 40))


def test_unknown_extractor_option_names_the_valid_ones():
    with pytest.raises(TypeError, match="its options: seed"):
        create_extractor("random", colour="blue")


@pytest.mark.slow  # real-size ViT-L/14 networks: about a minute and 3 GB of memory
def test_real_size_clip_l14_clip_l14_336_and_dinov2_l14_load_through_their_weights_folder(tmp_path, monkeypatch):
    import open_clip
    import timm
    from safetensors.torch import save_file

    folder = tmp_path / "weights"
    folder.mkdir()
    clip = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    save_file({k: v.contiguous() for k, v in randomised(clip.state_dict()).items()}, str(folder / "open_clip_vit_l_14_openai.safetensors"))
    del clip
    clip336 = open_clip.create_model("ViT-L-14-336-quickgelu", pretrained=None)
    save_file({k: v.contiguous() for k, v in randomised(clip336.state_dict()).items()},
              str(folder / "open_clip_vit_l_14_336_openai.safetensors"))
    del clip336
    dino = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in randomised(dino.state_dict()).items()}, str(folder / "timm_vit_large_patch14_dinov2_lvd142m.safetensors"))
    del dino
    monkeypatch.setenv("FAIRSYNTH_WEIGHTS", str(folder))
    assert create_extractor("clip")(images(1, 224)).shape == (1, 768)
    assert create_extractor("clip-l14-336")(images(1, 336)).shape == (1, 768)
    assert create_extractor("dinov2")(images(1, 224)).shape == (1, 1024)


def test_fetch_copies_a_package_shipped_file_into_a_weights_folder(tmp_path):
    from fairsynth.metrics.extractors.weights import fetch

    target = fetch(KNOWN_WEIGHTS["lpips-alex-heads"], tmp_path / "weights")
    assert target == tmp_path / "weights" / "lpips_v0.1_alex.pth"
    assert set(load_state_dict(target)) == {f"lin{i}.model.1.weight" for i in range(5)}
