"""The feature store: shapes, dtypes, resuming, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import require

from hdetach.experiments.captioning.data import DataError, read_karpathy
from hdetach.experiments.captioning.features import FeatureStore, StoreSettings, extract_features

require("torchvision")


@pytest.fixture
def images(split_file):
    from PIL import Image as PILImage

    images = read_karpathy(split_file)
    root = split_file.parent / "images"
    for k, im in enumerate(images):
        (root / im.path).parent.mkdir(parents=True, exist_ok=True)
        colour = (40 * k, 255 - 40 * k, 100)
        PILImage.new("RGB", (40 + 5 * k, 30), colour).save(root / im.path)
    return images, root


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_store_shapes_and_dtype_from_a_tiny_random_backbone(images, tmp_path, dtype):
    images, root = images
    settings = StoreSettings("resnet18", "none", 64, 14, dtype)
    extract_features(
        images, root, tmp_path / "f", settings, batch_size=4, workers=0, progress=False
    )
    store = FeatureStore(tmp_path / "f")
    assert store.pooled.shape == (6, 512) and store.pooled.dtype == np.dtype(dtype)
    assert store.spatial.shape == (6, 196, 512) and store.spatial.dtype == np.dtype(dtype)
    # The pooled vector is the mean of the last map; the regions only re-pool it.
    np.testing.assert_allclose(
        store.spatial[2].astype(np.float64).mean(0), store.pooled[2], rtol=2e-2, atol=1e-3
    )
    assert np.abs(store.pooled[0] - store.pooled[1]).max() > 0  # images differ
    assert store.rows([14, 10]).tolist() == [4, 0]


def test_an_interrupted_store_resumes_with_the_same_features(images, tmp_path):
    images, root = images
    settings = StoreSettings("resnet18", "none", 64, 2, "float32")
    out = tmp_path / "f"
    extract_features(images, root, out, settings, batch_size=4, workers=0, progress=False)
    full = np.load(out / "pooled.npy").copy()
    done = np.load(out / "done.npy", mmap_mode="r+")
    done[4:] = False  # as if stopped after the first batch
    done.flush()
    pooled = np.load(out / "pooled.npy", mmap_mode="r+")
    pooled[4:] = 0
    pooled.flush()
    with pytest.raises(DataError, match="2 of 6 images have no features"):
        FeatureStore(out)
    extract_features(images, root, out, settings, batch_size=4, workers=0, progress=False)
    np.testing.assert_allclose(FeatureStore(out).pooled, full, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="other settings"):
        extract_features(
            images, root, out, StoreSettings("resnet18", "none", 64, 3, "float32"), 4, 0
        )


def test_missing_weights_offline_is_one_clear_error(images, tmp_path, monkeypatch):
    import urllib.error

    import torch

    images, root = images
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(
        DataError, match="ImageNet weights of resnet18.*--weights PATH or --weights none"
    ):
        extract_features(
            images, root, tmp_path / "f", StoreSettings("resnet18", "imagenet", 64, 2, "float32")
        )
    with pytest.raises(DataError, match="not a torchvision"):
        extract_features(
            images, root, tmp_path / "f", StoreSettings("resnet9000", "none", 64, 2, "float32")
        )
    (root / images[0].path).unlink()
    with pytest.raises(DataError, match="1 images missing"):
        extract_features(
            images, root, tmp_path / "f", StoreSettings("resnet18", "none", 64, 2, "float32")
        )
