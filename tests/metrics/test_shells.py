"""The stateful shells: every registered metric declares what is better, and each used like a
torchmetrics metric (update, compute) gives its functional core's value."""

from __future__ import annotations

import itertools

import pytest
import torch

from fairsynth.metrics import METRICS
from fairsynth.metrics.functional.frechet import frechet_distance
from fairsynth.metrics.functional.vendi import vendi_score


# lpips builds torchvision's AlexNet with the deprecated `pretrained=` argument.
pytestmark = pytest.mark.filterwarnings("ignore:The parameter 'pretrained' is deprecated", "ignore:Arguments other than a weight enum")

def test_every_metric_declares_direction_formula_and_extractor():
    from fairsynth.metrics.extractors import EXTRACTORS

    for entry in METRICS.entries():
        shell = entry.obj()
        assert shell.higher_is_better and shell.formula and entry.help, entry.name
        assert shell.default_extractor in EXTRACTORS, entry.name
        assert any(v is not None for v in shell.higher_is_better.values()), entry.name


def test_shells_accumulate_like_torchmetrics():
    real = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    synthetic = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    fd = METRICS.get("fd")()
    for chunk in real.split(16):
        fd.update(chunk, real=True)
    for chunk in synthetic.split(16):
        fd.update(chunk, real=False)
    assert fd.compute()["fd"] == pytest.approx(frechet_distance(real, synthetic))
    fd.reset()
    with pytest.raises(ValueError, match="no synthetic features"):
        fd.compute()
    vendi = METRICS.get("vendi")()
    vendi.update(synthetic)
    assert vendi.compute()["vendi"] == pytest.approx(vendi_score(synthetic))
    train = torch.randn(60, 64, generator=torch.Generator().manual_seed(2))
    fresh = torch.randn(50, 64, generator=torch.Generator().manual_seed(3))
    memorisation = METRICS.get("memorisation")()
    memorisation.update(train, real=True)
    memorisation.update(torch.cat([train[:5], fresh]))  # five copies of training images
    result = memorisation.compute()
    assert result["memorised_share"] == pytest.approx(5 / 55)
    clip = METRICS.get("clip_score")(formula="hessel")
    clip.update(synthetic, prompts=synthetic)
    assert clip.compute()["clip_score"] == pytest.approx(2.5)


def test_lpips_diversity_in_evaluate_equals_the_mean_pairwise_lpips_package_distance(tmp_path):
    import lpips
    import numpy as np
    import torchvision
    from PIL import Image

    from fairsynth.metrics.config import EvaluateConfig
    from fairsynth.metrics.evaluate import evaluate
    from tests.metrics.conftest import write_set

    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    alexnet = torchvision.models.alexnet(weights=None)
    for block in (reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4, reference.net.slice5):
        for index, layer in block.named_children():
            alexnet.features[int(index)].load_state_dict(layer.state_dict())
    weights = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), weights)

    real = write_set(tmp_path / "real", 6, size=64, labels=["a"], fst=[1])
    synthetic = write_set(tmp_path / "synthetic", 5, size=64, labels=["a"], fst=[1], seed=4)
    cfg = EvaluateConfig(
        real=str(real), synthetic=str(synthetic), output=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
        metrics=["lpips_diversity"], by=["class"], weights={"lpips": str(weights)}, min_group_size=2, bootstrap=10,
    )
    result = evaluate(cfg)
    ours = next(r["value"] for r in result.results if r["on"] == "synthetic" and r["group"] == "all")

    paths = sorted((synthetic.parent / "images").glob("*.png"))
    pixels = [torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)[None] / 127.5 - 1 for p in paths]
    with torch.no_grad():
        pairs = [float(reference(pixels[i], pixels[j])) for i, j in itertools.combinations(range(len(paths)), 2)]
    assert ours == pytest.approx(sum(pairs) / len(pairs), rel=1e-4)
