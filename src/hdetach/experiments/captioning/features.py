"""Image features on disk: a torchvision CNN's pooled vector and spatial map per image.

A store is a folder::

    meta.json     backbone, weights, image size, grid, dtype, and the cocoid of each row
    pooled.npy    (N, C)        the global average of the last conv map (C = 2048 for ResNet-152)
    spatial.npy   (N, G*G, C)   the last conv map average-pooled to G x G regions (G = 14)
    done.npy      (N,) bool     rows written so far: an interrupted run resumes from here

The arrays are ``.npy`` files opened as memory maps, so training reads only the rows of
its minibatch. Images are resized to ``image_size`` squared (448 gives ResNet's last map
14 x 14 natively; smaller sizes are pooled up to the grid).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hdetach.experiments.captioning.data import DataError, Image
from hdetach.experiments.run.files import write_json

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class StoreSettings:
    backbone: str
    weights: str  # "imagenet", "none" (random init, seed 0) or a file path
    image_size: int
    grid: int
    dtype: str  # "float32" or "float16"


def bytes_per_image(channels: int, grid: int, dtype: str) -> int:
    return (channels + grid * grid * channels) * np.dtype(dtype).itemsize


class Backbone(nn.Module):
    """A torchvision ResNet-family classifier cut before its pooling: images (B, 3, S, S)
    -> pooled (B, C) and regions (B, G*G, C)."""

    def __init__(self, name: str, weights: str, grid: int):
        super().__init__()
        net = _torchvision_model(name, weights)
        if not (hasattr(net, "layer4") and hasattr(net, "fc")):
            raise DataError(
                f"--backbone {name}: expected a ResNet-family model (resnet*, resnext*)"
            )
        self.body = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc
        self.channels = net.fc.in_features
        self.grid = grid

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.body(images)  # (B, C, h, w)
        pooled = fmap.mean(dim=(2, 3))
        regions = nn.functional.adaptive_avg_pool2d(fmap, self.grid)
        return pooled, regions.flatten(2).transpose(1, 2)


def _torchvision_model(name: str, weights: str) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise DataError("image features need torchvision: pip install torchvision") from None
    except Exception as e:  # a torchvision built for another torch fails as it loads
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"torchvision does not load with torch {torch.__version__} ({reason}): install "
            "the torchvision release made for it, e.g. pip install torch==2.14.1 "
            "torchvision==0.29.1"
        ) from None

    if name not in torchvision.models.list_models(torchvision.models):
        raise DataError(f"--backbone {name}: not a torchvision classification model")
    if weights == "none":
        # Seeded, so that a resumed store is finished by the very same random network.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return torchvision.models.get_model(name, weights=None)
    if weights == "imagenet":
        default = torchvision.models.get_model_weights(name).DEFAULT
        try:
            return torchvision.models.get_model(name, weights=default)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise DataError(
                f"cannot load the ImageNet weights of {name}: not in {cache} and the download "
                f"failed ({type(e).__name__}); pass --weights PATH or --weights none"
            ) from None
    net = torchvision.models.get_model(name, weights=None)
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"--weights {weights}: not a {name} state dict ({reason})") from None
    return net


class ImageFiles(torch.utils.data.Dataset):
    """The images of a store, resized and normalised as the ImageNet models expect."""

    def __init__(self, root: Path, paths: list[str], rows: list[int], size: int):
        from torchvision import transforms

        self.root, self.paths, self.rows = root, paths, rows
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        from PIL import Image as PILImage

        row = self.rows[k]
        with PILImage.open(self.root / self.paths[row]) as im:
            return self.transform(im.convert("RGB")), row


def _open_store(out: Path, settings: StoreSettings, images: list[Image], channels: int):
    """The store's arrays, created, or reopened for resuming when the settings match."""
    ids = [im.cocoid for im in images]
    meta = {**asdict(settings), "channels": channels, "cocoids": ids}
    meta_path = out / "meta.json"
    n, g2 = len(images), settings.grid**2
    if meta_path.is_file():
        if json.loads(meta_path.read_text()) != meta:
            raise DataError(f"--out {out} holds features with other settings or images")
        mode = "r+"
    else:
        out.mkdir(parents=True, exist_ok=True)
        mode = "w+"
    arrays = {
        "pooled": ((n, channels), settings.dtype),
        "spatial": ((n, g2, channels), settings.dtype),
        "done": ((n,), "bool"),
    }
    opened = {
        name: np.lib.format.open_memmap(out / f"{name}.npy", mode, dtype, shape)
        for name, (shape, dtype) in arrays.items()
    }
    if mode == "w+":
        write_json(meta_path, meta)  # last, atomically: a store without meta is started anew
    return opened


def extract_features(
    images: list[Image],
    image_root: str | Path,
    out: str | Path,
    settings: StoreSettings,
    batch_size: int = 64,
    workers: int = 4,
    device: str = "cpu",
    progress: bool | None = None,
) -> Path:
    """Fill the store in ``out`` with the features of ``images``; resumes a partial store."""

    root, out = Path(image_root), Path(out)
    missing = [im.path for im in images if not (root / im.path).is_file()]
    if missing:
        raise DataError(f"{len(missing)} images missing under {root}, e.g. {missing[0]}")
    model = Backbone(settings.backbone, settings.weights, settings.grid).eval().to(device)
    store = _open_store(out, settings, images, model.channels)
    todo = np.flatnonzero(~store["done"]).tolist()
    files = ImageFiles(root, [im.path for im in images], todo, settings.image_size)
    loader = torch.utils.data.DataLoader(files, batch_size=batch_size, num_workers=workers)
    per_image = bytes_per_image(model.channels, settings.grid, settings.dtype)
    bar = tqdm(
        total=len(images), initial=len(images) - len(todo), unit="img", disable=progress is False
    )
    bar.write(
        f"{out}: {per_image / 1024:.1f} KiB per image, {per_image * len(images) / 2**30:.2f} GiB"
    )
    for batch, rows in loader:
        pooled, regions = model(batch.to(device))
        rows = rows.numpy()
        store["pooled"][rows] = pooled.cpu().numpy().astype(settings.dtype)
        store["spatial"][rows] = regions.cpu().numpy().astype(settings.dtype)
        for array in store.values():
            array.flush()  # the data first, then the rows marked done
        store["done"][rows] = True
        store["done"].flush()
        bar.update(len(rows))
    bar.close()
    return out


class FeatureStore:
    """A finished store, read through memory maps; ``rows(cocoids)`` finds their rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise DataError(
                f"{self.path}: not a feature store (no meta.json); run hdetach caption features"
            )
        self.meta = json.loads((self.path / "meta.json").read_text())
        done = np.load(self.path / "done.npy", mmap_mode="r")
        if not done.all():
            raise DataError(
                f"{self.path}: {int((~done).sum())} of {len(done)} images have no features yet; "
                "rerun hdetach caption features to finish it"
            )
        self.pooled = np.load(self.path / "pooled.npy", mmap_mode="r")
        self.spatial = np.load(self.path / "spatial.npy", mmap_mode="r")
        self._row = {cocoid: row for row, cocoid in enumerate(self.meta["cocoids"])}

    @property
    def channels(self) -> int:
        return self.meta["channels"]

    def rows(self, cocoids: list[int]) -> np.ndarray:
        missing = [i for i in cocoids if i not in self._row]
        if missing:
            raise DataError(
                f"{self.path}: no features for image {missing[0]} ({len(missing)} missing)"
            )
        return np.array([self._row[i] for i in cocoids], dtype=np.int64)
