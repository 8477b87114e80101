"""Features extracted once per image and extractor, kept on disk as safetensors.

The key of a feature vector is the image's *content* (sha256 of the file's bytes) plus the
extractor's cache key (name, options, weights sha256, image-size policy): renaming or copying
an image reuses its features, a changed image, other weights or another resize policy do not.
Every metric is then computed from ``[N, d]`` arrays, so a second evaluation of the same images
with another metric, another grouping or another bootstrap costs only the metric.

Layout: ``<cache_dir>/features/<extractor key>/info.json`` (what made them, for people) and one
shard per run, ``<time>-<pid>-<rand>.safetensors`` holding ``features`` ``(n, d)`` float32 and
``sizes`` ``(n, 2)`` (original width, height), with the images' hashes in the file's metadata.
Shards are written atomically; stale ones are never read again.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from fairsynth.data.preprocess import load_rgb
from fairsynth.io import atomic_write_bytes, atomic_write_text, sha256_file
from fairsynth.metrics.extractors.base import Extractor, prepare_image

#: Bumped whenever what is stored changes.
CACHE_VERSION = 1


class NonFiniteFeatures(ValueError):
    """An extractor produced NaN or infinite features: every metric would silently change."""


@dataclass
class FeatureTable:
    """Features of a list of images, row i for image i (repeats share a row's values)."""

    extractor: str
    features: Tensor  # (N, d) float32
    from_cache: int = 0
    extracted: int = 0
    provenance: dict = field(default_factory=dict)


def content_hashes(paths: Iterable[Path], pool: ThreadPoolExecutor | None = None) -> dict[Path, str]:
    """sha256 of every distinct file (hashlib releases the GIL, so a pool helps)."""
    distinct = list(dict.fromkeys(paths))
    hashes = pool.map(sha256_file, distinct) if pool is not None else map(sha256_file, distinct)
    return dict(zip(distinct, hashes))


class FeatureCache:
    """Shards of cached features under ``root`` (None: nothing is read or written)."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root) / "features" if root else None

    def _folder(self, key: str) -> Path | None:
        return self.root / key if self.root is not None else None

    def lookup(self, key: str, hashes: set[str]) -> dict[str, tuple[Tensor, tuple[int, int]]]:
        """Cached ``(features (d,), (width, height))`` of those of ``hashes`` that are there."""
        folder = self._folder(key)
        found: dict[str, tuple[Tensor, tuple[int, int]]] = {}
        if folder is None or not folder.is_dir():
            return found
        from safetensors import safe_open

        for shard in sorted(folder.glob("*.safetensors")):
            wanted = hashes - found.keys()
            if not wanted:
                break
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    names = json.loads((handle.metadata() or {}).get("hashes", "[]"))
                    rows = [i for i, h in enumerate(names) if h in wanted]
                    if not rows:
                        continue
                    features = handle.get_tensor("features")
                    sizes = handle.get_tensor("sizes")
            except Exception:  # a foreign or broken file: not ours to use
                continue
            for i in rows:
                found[names[i]] = (features[i], (int(sizes[i, 0]), int(sizes[i, 1])))
        return found

    def store(self, key: str, info: dict, hashes: list[str], features: Tensor, sizes: list[tuple[int, int]]) -> Path | None:
        """Write one shard (and ``info.json`` the first time)."""
        folder = self._folder(key)
        if folder is None or not hashes:
            return None
        from safetensors.torch import save

        folder.mkdir(parents=True, exist_ok=True)
        info_path = folder / "info.json"
        if not info_path.exists():
            atomic_write_text(info_path, json.dumps({"cache_version": CACHE_VERSION, **info}, indent=2, default=str))
        data = save(
            {
                "features": features.to(torch.float32).contiguous(),
                "sizes": torch.tensor(sizes, dtype=torch.int32).reshape(-1, 2),
            },
            metadata={"hashes": json.dumps(hashes), "cache_version": str(CACHE_VERSION)},
        )
        shard = folder / f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}.safetensors"
        atomic_write_bytes(shard, data)
        return shard


def _check_finite(features: Tensor, names: list[str], extractor: str) -> None:
    bad = (~torch.isfinite(features)).any(dim=1)
    if bad.any():
        listed = [names[i] for i in torch.nonzero(bad).flatten().tolist()]
        raise NonFiniteFeatures(
            f"extractor {extractor} produced NaN or infinite features for {len(listed)} image(s): "
            f"{', '.join(listed[:5])}{' ...' if len(listed) > 5 else ''}; every metric would silently change, "
            "so nothing was computed (check the weights file and the images)"
        )


def extract_features(
    paths: list[Path],
    extractors: list[Extractor],
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, FeatureTable], dict[Path, tuple[int, int]]]:
    """Features of ``paths`` for every extractor, from the cache where possible.

    Each image missing for any extractor is decoded once and resized for every extractor that
    needs it. Returns the tables (rows in the order of ``paths``) and each image's original
    (width, height).
    """
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = content_hashes(paths, pool)
        distinct = list(dict.fromkeys(hashes.values()))
        sizes_by_hash: dict[str, tuple[int, int]] = {}
        rows: dict[str, dict[str, Tensor]] = {}
        missing: dict[str, set[str]] = {}
        keys: dict[str, str] = {}
        counts: dict[str, tuple[int, int]] = {}
        for extractor in extractors:
            keys[extractor.name] = extractor.cache_key()
            cached = cache.lookup(keys[extractor.name], set(distinct))
            rows[extractor.name] = {h: value[0] for h, value in cached.items()}
            for h, (_, size) in cached.items():
                sizes_by_hash.setdefault(h, size)
            missing[extractor.name] = set(distinct) - cached.keys()
            counts[extractor.name] = (len(cached), len(missing[extractor.name]))

        to_load = [h for h in distinct if any(h in m for m in missing.values())]
        path_of = {h: p for p, h in reversed(list(hashes.items()))}
        if to_load and progress:
            progress(f"extracting features of {len(to_load)} images with {', '.join(e.name for e in extractors if missing[e.name])}")

        def load(h: str) -> tuple[str, tuple[int, int], dict[str, np.ndarray]]:
            image = load_rgb(path_of[h])
            prepared = {e.name: prepare_image(image, e.input_size) for e in extractors if h in missing[e.name]}
            return h, image.size, prepared

        def submit(start: int) -> list:
            return [pool.submit(load, h) for h in to_load[start : start + batch_size]]

        new: dict[str, list[tuple[str, Tensor]]] = {e.name: [] for e in extractors}
        pending = submit(0)
        for start in range(0, len(to_load), batch_size):
            loaded = [future.result() for future in pending]
            pending = submit(start + batch_size)  # decode the next batch while this one runs through the networks
            for h, size, _ in loaded:
                sizes_by_hash[h] = size
            for extractor in extractors:
                batch = [(h, prepared[extractor.name]) for h, _, prepared in loaded if extractor.name in prepared]
                if not batch:
                    continue
                images = torch.from_numpy(np.stack([array for _, array in batch])).permute(0, 3, 1, 2)  # (B, 3, H, W)
                features = extractor(images)  # (B, d)
                _check_finite(features, [str(path_of[h]) for h, _ in batch], extractor.name)
                new[extractor.name].extend(zip([h for h, _ in batch], features))

    tables: dict[str, FeatureTable] = {}
    for extractor in extractors:
        fresh = new[extractor.name]
        if fresh:
            cache.store(
                keys[extractor.name], extractor.provenance(), [h for h, _ in fresh],
                torch.stack([f for _, f in fresh]), [sizes_by_hash[h] for h, _ in fresh],
            )
        table = rows[extractor.name]
        table.update(dict(fresh))
        stacked = torch.stack([table[hashes[p]] for p in paths]) if paths else torch.zeros(0, extractor.feature_dim)
        _check_finite(stacked, [str(p) for p in paths], extractor.name)
        tables[extractor.name] = FeatureTable(
            extractor=extractor.name, features=stacked, from_cache=counts[extractor.name][0],
            extracted=counts[extractor.name][1], provenance=extractor.provenance(),
        )
    return tables, {p: sizes_by_hash[hashes[p]] for p in paths}
