"""Training data: (degraded, clean) pairs as fastai DataLoaders.

Two sources, one pipeline:

- a paired folder written by `degrade` (`DST/input/<rel>`, `DST/target/<rel>`), matched by relative path
  (the extension may differ between the two sides);
- a folder of clean photos, degraded on the fly: a random crop (and flip), then
  `degradations.pipeline.degrade(crop, seed)` per sample, so a small photo set yields unlimited pairs.

The train/validation split is by a hash of each file's relative path, so it does not depend on listing order
and a file never changes side when others are added. Validation crops and degradations use fixed per-item
seeds: its loss is comparable across runs. Inputs and targets are scaled with `restore.imaging` to [-1, 1];
with `target_space="lab"` the target is L*a*b* scaled to [-1, 1] instead (see `rgb_to_lab_scaled`).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from PIL import Image
from skimage.color import lab2rgb, rgb2lab
from torch.utils.data import Dataset

from degradations.pipeline import apply_pipeline, degrade, degrade_with_damage
from restore.baselines import negative_lut
from restore.imageio import read_image
from restore.imaging import to_tensor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# L* is in [0, 100]; a*, b* of sRGB colours stay within about +-110.
_L_SCALE, _AB_SCALE = 50.0, 110.0


@dataclass(frozen=True)
class DataOptions:
    """Data options shared by every training stage (fields are inherited by the stage configs)."""

    size: int = 128                      # square crop side in pixels; a multiple of 32 (the U-Net's stride)
    bs: int = 8                          # batch size
    valid_fraction: float = 0.1          # share of files held out for validation (at least one file)
    max_valid: int = 256                 # cap on validation items, so validation stays cheap on big folders
    epoch_size: int = 0                  # on-the-fly only: samples per epoch; 0 = one per training photo
    max_zoom: float = 2.0                # on-the-fly/paired train crops: short side resized to [1, max_zoom]*size
    flip: bool = True                    # random horizontal flips of training crops
    seed: int = 0                        # split and validation seeds; training draws from torch's RNG
    num_workers: int = 0                 # DataLoader worker processes (0 is fastest for tiny CPU runs)
    paired: str = "auto"                 # "auto": a folder with input/ and target/ is paired; "yes"; "no"


def list_images(root: str | Path) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 HxWx3 RGB, upright; a file that is not a usable image raises ValueError naming it.

    The same reader as `restore` (EXIF orientation, pixel limit, pipes refused), so training sees photos the
    way inference will.
    """
    return read_image(path).rgb


def is_paired_folder(root: str | Path) -> bool:
    root = Path(root)
    return (root / "input").is_dir() and (root / "target").is_dir()


def split_items(keys: list[str], valid_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, valid indices): the files whose path hash is smallest go to validation.

    At least one file goes to each side when there are two or more.
    """
    n = len(keys)
    if n == 0:
        return [], []
    n_valid = min(max(1, round(valid_fraction * n)), n - 1) if n > 1 else 0
    order = sorted(range(n), key=lambda i: (zlib.crc32(keys[i].encode()) ^ seed, keys[i]))
    valid = sorted(order[:n_valid])
    train = sorted(order[n_valid:])
    return train, valid


def _resize_short(image: np.ndarray, short: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short / min(h, w)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def crop_pair(images: list[np.ndarray], size: int, rng: np.random.Generator | None, max_zoom: float = 1.0,
              flip: bool = False) -> list[np.ndarray]:
    """The same crop of each image (all the same HxW): random with `rng`, centred without.

    The short side is first resized to `size` times a zoom in [1, max_zoom] (random) or exactly `size`
    (centred), so a crop shows a large part of the photo rather than a few pixels of it.
    """
    zoom = rng.uniform(1.0, max(1.0, max_zoom)) if rng is not None else 1.0
    short = max(size, round(size * zoom))
    if min(images[0].shape[:2]) != short:
        images = [_resize_short(image, short) for image in images]
    h, w = images[0].shape[:2]
    if rng is not None:
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    out = [image[top:top + size, left:left + size] for image in images]
    if rng is not None and flip and rng.random() < 0.5:
        out = [image[:, ::-1] for image in out]
    return [np.ascontiguousarray(image) for image in out]


def rgb_to_lab_scaled(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float 3xHxW L*a*b* with each channel scaled to about [-1, 1]."""
    lab = rgb2lab(image).astype(np.float32)
    lab[..., 0] = lab[..., 0] / _L_SCALE - 1.0
    lab[..., 1:] /= _AB_SCALE
    return torch.from_numpy(np.clip(lab, -1.0, 1.0).transpose(2, 0, 1).copy())


def lab_scaled_to_rgb(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of `rgb_to_lab_scaled` for one 3xHxW tensor -> uint8 HxWx3 RGB (for LAB-trained generators)."""
    lab = tensor.detach().float().clamp(-1.0, 1.0).permute(1, 2, 0).cpu().numpy().astype(np.float64)
    lab = np.stack([(lab[..., 0] + 1.0) * _L_SCALE, lab[..., 1] * _AB_SCALE, lab[..., 2] * _AB_SCALE], -1)
    return (np.clip(lab2rgb(lab), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _target_tensor(image: np.ndarray, target_space: str) -> torch.Tensor:
    return rgb_to_lab_scaled(image) if target_space == "lab" else to_tensor(image)


def _sample_seed(key: str, seed: int) -> int:
    # Same recipe as degradations.pipeline.seed_for: the crc32 of the relative path mixed with the run seed.
    return (zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF


class OnTheFlyPairs(Dataset):
    """Clean photos -> (degraded crop, clean crop) tensors, degraded per sample.

    `train=True`: every access draws a fresh seed from torch's RNG (seeded per worker by the DataLoader), so
    each epoch sees new crops and degradations. `train=False`: the crop is centred and the degradation seed
    is fixed per file, so validation is identical across runs.
    """

    def __init__(self, files: list[Path], keys: list[str], size: int, train: bool, length: int = 0,
                 max_zoom: float = 2.0, flip: bool = True, seed: int = 0, degrade_config=None,
                 target_space: str = "rgb"):
        if not files:
            raise ValueError("no images to train on")
        self.files, self.keys = list(files), list(keys)
        self.size, self.train, self.max_zoom, self.flip, self.seed = size, train, max_zoom, flip, seed
        self.length = length or len(self.files)
        self.degrade_config, self.target_space = degrade_config, target_space

    def __len__(self) -> int:
        return self.length

    def clean_crop(self, index: int) -> tuple[np.ndarray, int]:
        """(clean uint8 crop, degradation seed) for item `index`."""
        file_index = index % len(self.files)
        if self.train:
            sample_seed = int(torch.randint(0, 2**31 - 1, ()).item())
            rng = np.random.default_rng(sample_seed)
            (clean,) = crop_pair([read_rgb(self.files[file_index])], self.size, rng, self.max_zoom, self.flip)
        else:
            sample_seed = _sample_seed(self.keys[file_index], self.seed)
            (clean,) = crop_pair([read_rgb(self.files[file_index])], self.size, None)
        return clean, sample_seed

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(degraded uint8, clean uint8) crops for item `index`."""
        clean, sample_seed = self.clean_crop(index)
        degraded, _record = degrade(clean, sample_seed, self.degrade_config)
        return degraded, clean

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        degraded, clean = self.pair(index)
        return to_tensor(degraded), _target_tensor(clean, self.target_space)


class OnTheFlyDamage(OnTheFlyPairs):
    """Clean photos -> (degraded crop, damage mask) tensors for the damage detector: 3xSxS in [-1, 1] and a
    1xSxS float mask (1 = painted damage that shows, `degradations.pipeline.degrade_with_damage`). Crops and
    seeds as `OnTheFlyPairs`; `degrade_config` should give most crops damage (the detector stage's does)."""

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(degraded uint8 HxWx3, damage bool HxW) crops for item `index`."""
        clean, sample_seed = self.clean_crop(index)
        return degrade_with_damage(clean, sample_seed, self.degrade_config)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        degraded, mask = self.pair(index)
        return to_tensor(degraded), torch.from_numpy(mask[None].astype(np.float32))


IDENTITY_TABLE = np.linspace(-1.0, 1.0, 256, dtype=np.float32)   # level i -> i / 127.5 - 1


def positive_table(scan: np.ndarray) -> np.ndarray:
    """float32 3x256: the positive each level of a negative's channel becomes (`negative_lut` of the scan
    itself), in [-1, 1] units, so a denoiser's loss can be taken on the photo the scan inverts to."""
    return negative_lut(scan)[:, 0, :].T.astype(np.float32) / 127.5 - 1.0


class OnTheFlyNoise(OnTheFlyPairs):
    """Clean photos -> (noisy crop, clean crop, table) tensors for the denoiser. `degrade_config` is a pair of
    albumentations recipes (the denoiser stage's `DenoiserConfig.recipes()`): the first makes the photo what it
    is (a black-and-white print: the target is then one too; a scanned negative), the second adds the noise;
    both seeded per item as `OnTheFlyPairs` seeds its degradations. The table (3x256, `positive_table`) maps
    each channel's levels to what the loss compares: a negative's to its positive (noise on a negative's scan
    costs most where the inversion is steep: its dense, dark end), a print's or colour photo's to themselves."""

    n_inp = 1   # one input (the noisy crop); the clean crop and its table are both targets

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(noisy uint8, clean uint8, float32 3x256 table) for item `index`."""
        clean, sample_seed = self.clean_crop(index)
        photo, noise = self.degrade_config
        clean, record = apply_pipeline(photo, clean, sample_seed)
        noisy, _record = apply_pipeline(noise, clean, (sample_seed + 1) % 2**31)
        negative = record["category"].startswith("negative")
        table = positive_table(clean) if negative else np.repeat(IDENTITY_TABLE[None], 3, axis=0)
        return noisy, clean, table

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(noisy uint8, clean uint8) crops for item `index`."""
        noisy, clean, _table = self.sample(index)
        return noisy, clean

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noisy, clean, table = self.sample(index)
        return to_tensor(noisy), to_tensor(clean), torch.from_numpy(table)


class PairedFolder(Dataset):
    """Pairs written by `degrade`: the same crop of `input/<rel>` and `target/<rel>`."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: int, train: bool, max_zoom: float = 2.0,
                 flip: bool = True, target_space: str = "rgb"):
        if not pairs:
            raise ValueError("no image pairs to train on")
        self.pairs, self.size, self.train = list(pairs), size, train
        self.max_zoom, self.flip, self.target_space = max_zoom, flip, target_space

    def __len__(self) -> int:
        return len(self.pairs)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        input_path, target_path = self.pairs[index]
        degraded, clean = read_rgb(input_path), read_rgb(target_path)
        if degraded.shape != clean.shape:
            raise ValueError(f"{input_path}: size {degraded.shape[:2]} differs from its target "
                             f"{target_path} {clean.shape[:2]}")
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item())) if self.train else None
        degraded, clean = crop_pair([degraded, clean], self.size, rng, self.max_zoom if self.train else 1.0,
                                    self.flip)
        return degraded, clean

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        degraded, clean = self.pair(index)
        return to_tensor(degraded), _target_tensor(clean, self.target_space)


def paired_files(root: str | Path) -> list[tuple[Path, Path]]:
    """(input, target) pairs of a `degrade` output folder, matched by relative path without extension."""
    root = Path(root)
    inputs = {p.relative_to(root / "input").with_suffix("").as_posix(): p for p in list_images(root / "input")}
    pairs = []
    for target in list_images(root / "target"):
        key = target.relative_to(root / "target").with_suffix("").as_posix()
        if key in inputs:
            pairs.append((inputs[key], target))
    if not pairs:
        raise ValueError(f"{root}: no input/target pairs with matching names")
    return pairs


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def make_datasets(data_dir: str | Path, options: DataOptions, size: int | None = None,
                  target_space: str = "rgb", degrade_config=None) -> tuple[Dataset, Dataset]:
    """(train, valid) datasets for `data_dir`, paired or on the fly as `options.paired` says."""
    data_dir = Path(data_dir)
    size = size or options.size
    if size % 32:
        raise ValueError(f"size {size} is not a multiple of 32 (the U-Net downsamples by 32)")
    paired = options.paired == "yes" or (options.paired == "auto" and is_paired_folder(data_dir))
    if paired:
        pairs = paired_files(data_dir)
        keys = [target.relative_to(data_dir / "target").as_posix() for _, target in pairs]
        train_idx, valid_idx = split_items(keys, options.valid_fraction, options.seed)
        valid_idx = valid_idx[: options.max_valid]
        common = {"size": size, "max_zoom": options.max_zoom, "flip": options.flip, "target_space": target_space}
        return (PairedFolder([pairs[i] for i in train_idx], train=True, **common),
                PairedFolder([pairs[i] for i in valid_idx], train=False, **common))
    common = {"size": size, "max_zoom": options.max_zoom, "flip": options.flip, "seed": options.seed,
              "degrade_config": degrade_config, "target_space": target_space}
    return _on_the_fly(OnTheFlyPairs, data_dir, options, common)


def _on_the_fly(dataset_class: type[OnTheFlyPairs], data_dir: Path, options: DataOptions, common: dict
                ) -> tuple[Dataset, Dataset]:
    """(train, valid) `dataset_class` datasets of a folder of clean photos, split by path hash."""
    files = list_images(data_dir)
    if len(files) < 2:
        raise ValueError(f"{data_dir}: need at least 2 images (one for validation), found {len(files)}")
    keys = [f.relative_to(data_dir).as_posix() for f in files]
    train_idx, valid_idx = split_items(keys, options.valid_fraction, options.seed)
    valid_idx = valid_idx[: options.max_valid]
    train = dataset_class([files[i] for i in train_idx], [keys[i] for i in train_idx], train=True,
                          length=options.epoch_size, **common)
    valid = dataset_class([files[i] for i in valid_idx], [keys[i] for i in valid_idx], train=False, **common)
    return train, valid


def _clean_photo_datasets(dataset_class: type[OnTheFlyPairs], data_dir: str | Path, options: DataOptions,
                          degrade_config, why: str) -> tuple[Dataset, Dataset]:
    data_dir = Path(data_dir)
    if options.paired == "yes" or (options.paired == "auto" and is_paired_folder(data_dir)):
        raise ValueError(f"{data_dir}: {why}")
    common = {"size": options.size, "max_zoom": options.max_zoom, "flip": options.flip, "seed": options.seed,
              "degrade_config": degrade_config}
    return _on_the_fly(dataset_class, data_dir, options, common)


def make_damage_datasets(data_dir: str | Path, options: DataOptions, degrade_config) -> tuple[Dataset, Dataset]:
    """(train, valid) `OnTheFlyDamage` datasets of a folder of clean photos (a paired folder has no masks)."""
    return _clean_photo_datasets(OnTheFlyDamage, data_dir, options, degrade_config,
                                 "the damage detector trains on clean photos, degraded on the fly; a paired "
                                 "folder does not say where the damage is")


def make_noise_datasets(data_dir: str | Path, options: DataOptions, recipes) -> tuple[Dataset, Dataset]:
    """(train, valid) `OnTheFlyNoise` datasets of a folder of clean photos; `recipes`: (what the photo is, the
    noise added to it), as `DenoiserConfig.recipes()` gives."""
    return _clean_photo_datasets(OnTheFlyNoise, data_dir, options, recipes,
                                 "the denoiser trains on clean photos with noise added on the fly; this is a "
                                 "paired folder")


def make_dataloaders(data_dir: str | Path, options: DataOptions = DataOptions(), size: int | None = None,
                     bs: int | None = None, device: torch.device | str | None = None,
                     target_space: str = "rgb", degrade_config=None) -> DataLoaders:
    """fastai DataLoaders of (degraded, clean) batches, Nx3xSxS in [-1, 1].

    `size`/`bs` override the options (progressive resizing builds one DataLoaders per size).
    """
    train, valid = make_datasets(data_dir, options, size, target_space, degrade_config)
    return dataloaders_from(train, valid, bs or options.bs, device, options.num_workers)


def dataloaders_from(train: Dataset, valid: Dataset, bs: int, device=None, num_workers: int = 0) -> DataLoaders:
    device = torch.device(device) if device is not None else default_device()
    if len(train) < bs:
        raise ValueError(f"batch size {bs} is larger than the {len(train)} training items")
    train_dl = DataLoader(train, bs=bs, shuffle=True, drop_last=True, num_workers=num_workers, device=device)
    valid_dl = DataLoader(valid, bs=bs, shuffle=False, drop_last=False, num_workers=num_workers, device=device)
    return DataLoaders(train_dl, valid_dl, device=device)


def show_pairs(dataset: Dataset, n: int = 4, titles=("degraded", "clean"), figsize_per=2.5):
    """Matplotlib figure: `n` (degraded, clean) pairs from `dataset`, one row each (for notebooks)."""
    import matplotlib.pyplot as plt

    n = min(n, len(dataset))
    fig, axes = plt.subplots(n, 2, figsize=(2 * figsize_per, n * figsize_per), squeeze=False)
    for row in range(n):
        for col, image in enumerate(dataset.pair(row)):
            axes[row][col].imshow(image)
            axes[row][col].set_axis_off()
            if row == 0:
                axes[row][col].set_title(titles[col])
    fig.tight_layout()
    return fig
