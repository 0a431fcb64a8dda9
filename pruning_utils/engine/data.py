"""Data: CIFAR-10 (three ways to supply it), photos cut into 128x128 crops, embedded stand-ins.

Images are held in memory as uint8 tensors (N, C, H, W); batches are normalised and augmented as
whole tensors, on the training device, so a CPU epoch is not spent in per-image Python code.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DATA_DIR

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EMBEDDED = "embedded"


class DataUnavailableError(FileNotFoundError):
    """The requested data is neither on disk nor downloadable; the message says how to supply it."""


# --------------------------------------------------------------------------------------------
# Classification data
# --------------------------------------------------------------------------------------------
@dataclass
class ImageSplits:
    """Train/validation/test images (uint8, N x C x H x W) with integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the training images on the [0, 1] scale."""
        return tuple((self.x_train.float() / 255).mean(dim=(0, 2, 3)).tolist())

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the training images on the [0, 1] scale."""
        return tuple((self.x_train.float() / 255).std(dim=(0, 2, 3)).tolist())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def loaders(self, batch_size: int, device: torch.device | str = "cpu", augment: bool = True,
                seed: int = 0, train_size: int | None = None) -> tuple["BatchLoader", "BatchLoader", "BatchLoader"]:
        """Train (shuffled, augmented), validation and test loaders normalised by the training statistics.

        ``train_size``: train on that many training images drawn at random with ``seed`` (still normalised by the
        statistics of all of them, as the baseline was), e.g. to fit an ablation study into a CPU's hours.
        """
        stats = dict(mean=self.mean, std=self.std, device=device)
        x_train, y_train = self.x_train, self.y_train
        if train_size is not None:
            if not 0 < train_size <= len(y_train):
                raise ValueError(f"train_size must be between 1 and {len(y_train)} (the training images), "
                                 f"got {train_size}")
            chosen = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[:train_size]
            x_train, y_train = x_train[chosen], y_train[chosen]
        return (
            BatchLoader(x_train, y_train, batch_size, shuffle=True, augment=augment, seed=seed, **stats),
            BatchLoader(self.x_val, self.y_val, batch_size * 2, **stats),
            BatchLoader(self.x_test, self.y_test, batch_size * 2, **stats),
        )


def _missing_cifar_error(source: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"CIFAR-10 not found at {source!r} and it could not be downloaded. Supply it in one of three ways:\n"
        f"  1. torchvision's format: let it download with download=True (needs the network) into "
        f"{DATA_DIR / 'cifar10'}, or point `source` at a folder holding 'cifar-10-batches-py';\n"
        f"  2. an .npz file with uint8 arrays x_train, y_train, x_test, y_test (N x 32 x 32 x 3), "
        f"e.g. the shared 'cifar10_subset.npz';\n"
        f"  3. an image folder with train/<class>/*.png and test/<class>/*.png.\n"
        f"Or use source='{EMBEDDED}' for the small stand-in that ships with scikit-learn."
    )


def load_classification(source: str | Path = EMBEDDED, val_size: int | None = None, val_from: str = "test",
                        seed: int = 0, download: bool = False) -> ImageSplits:
    """Load an image-classification data set and split it into train, validation and test.

    ``source``: ``"embedded"`` (scikit-learn's digits up-scaled to 3x32x32), an ``.npz`` file, a
    torchvision CIFAR-10 folder, or an image folder with ``train/`` and ``test/`` class folders.
    ``val_from="test"`` takes the first ``val_size`` test images as validation and keeps the rest as
    test (the reference protocol: 5,000 and 5,000); ``"train"`` draws ``val_size`` training images
    at random with ``seed``.
    """
    if val_from not in ("test", "train"):
        raise ValueError(f"val_from must be 'test' or 'train', got {val_from!r}")
    if str(source) == EMBEDDED:
        return _embedded_digits(seed)
    x_tr, y_tr, x_te, y_te, classes = _read_classification_source(Path(source), download)
    if val_size is None:
        val_size = len(y_te) // 2 if val_from == "test" else len(y_tr) // 10
    pool = len(y_te) if val_from == "test" else len(y_tr)
    if not 0 < val_size < pool:
        raise ValueError(f"val_size must be between 1 and {pool - 1} for val_from={val_from!r}, got {val_size}")
    if val_from == "test":
        x_va, y_va, x_te, y_te = x_te[:val_size], y_te[:val_size], x_te[val_size:], y_te[val_size:]
    else:
        order = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(seed))
        x_va, y_va = x_tr[order[:val_size]], y_tr[order[:val_size]]
        x_tr, y_tr = x_tr[order[val_size:]], y_tr[order[val_size:]]
    return ImageSplits(x_tr, y_tr, x_va, y_va, x_te, y_te, classes, str(source))


def _read_classification_source(path: Path, download: bool):
    if path.suffix == ".npz":
        if not path.is_file():
            raise _missing_cifar_error(str(path))
        return _from_npz(path)
    if (path / "train").is_dir() and (path / "test").is_dir():
        return _from_image_folder(path)
    batches = path if path.name == "cifar-10-batches-py" else path / "cifar-10-batches-py"
    if batches.is_dir():
        return _from_cifar_batches(batches)
    if download:
        try:
            import torchvision

            torchvision.datasets.CIFAR10(str(path), train=True, download=True)
            torchvision.datasets.CIFAR10(str(path), train=False, download=True)
        except Exception as err:  # network errors come in many types
            raise _missing_cifar_error(str(path)) from err
        return _from_cifar_batches(path / "cifar-10-batches-py")
    raise _missing_cifar_error(str(path))


def _nhwc_to_tensor(x: np.ndarray, where: str) -> torch.Tensor:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{where}: expected uint8 images of shape N x H x W x 3, got {x.dtype} {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _checked_labels(y, count: int, num_classes: int, where: str) -> torch.Tensor:
    """``y`` as int64 class indices after checking them against ``count`` images and ``num_classes``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be a vector of N class indices (or N x 1), got shape {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integer class indices, got dtype {y.dtype}; "
                         f"store them as integers (e.g. y.astype(np.int64) if they are whole numbers)")
    if len(y) != count:
        raise ValueError(f"{where}: {len(y)} labels for {count} images; every image needs exactly one label")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1} ({num_classes} classes), found "
                         f"{y.min()}..{y.max()}; give the class names (e.g. a class_names array) for more classes")
    return torch.from_numpy(y.astype(np.int64))


def _from_npz(path: Path):
    with np.load(path, allow_pickle=False) as npz:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}; it needs x_train, y_train, x_test, y_test")
        classes = [str(c) for c in npz["class_names"]] if "class_names" in npz.files else CIFAR10_CLASSES
        out = []
        for split in ("train", "test"):
            x = _nhwc_to_tensor(npz[f"x_{split}"], f"{path} x_{split}")
            out += [x, _checked_labels(npz[f"y_{split}"], len(x), len(classes), f"{path} y_{split}")]
        return (*out, classes)


# the batches hold dicts, lists, strings and numpy arrays, nothing else
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch file, refusing any global beyond :data:`_CIFAR_PICKLE_GLOBALS`."""

    def __init__(self, fh, path: Path):
        super().__init__(fh, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.path} is not a CIFAR-10 batch file: it asks for {module}.{name}, which a batch never "
                f"holds (a pickle can run code, so it was refused); replace the folder with the original batches")
        return super().find_class(module, name)


def _batch_field(batch, key: str, path: Path):
    if not isinstance(batch, dict) or not ({key, key.encode()} & set(batch)):
        raise ValueError(f"{path} is not a CIFAR-10 batch file: expected a dict with 'data' and 'labels'")
    return batch[key] if key in batch else batch[key.encode()]


def _from_cifar_batches(folder: Path):
    def read(names):
        xs, ys = [], []
        for name in names:
            path = folder / name
            with open(path, "rb") as fh:  # torchvision's CIFAR10 unpickles without restriction, so not used here
                batch = _CifarUnpickler(fh, path).load()
            x = np.asarray(_batch_field(batch, "data", path))
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{path}: expected 'data' as uint8 N x 3072 (3 x 32 x 32 rows), got {x.dtype} "
                                 f"{x.shape}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(_checked_labels(_batch_field(batch, "labels", path), len(x), len(CIFAR10_CLASSES), str(path)))
        return torch.from_numpy(np.concatenate(xs)), torch.cat(ys)

    x_tr, y_tr = read([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = read(["test_batch"])
    return x_tr, y_tr, x_te, y_te, CIFAR10_CLASSES


def _from_image_folder(root: Path, size: int = 32):
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataUnavailableError(f"{root / 'train'} has no class folders; expected train/<class>/*.png")
    extra = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise ValueError(f"{root / 'test'} has class folders {extra} that {root / 'train'} lacks; "
                         f"both need the same classes")

    def read(split):
        xs, ys = [], []
        for label, name in enumerate(classes):
            files = [f for f in sorted((root / split / name).glob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise DataUnavailableError(f"{root / split / name} holds no images; every class needs images "
                                           f"({', '.join(sorted(IMAGE_SUFFIXES))}) in both train/ and test/")
            xs += [_read_rgb(file, resize=(size, size)) for file in files]
            ys += [label] * len(files)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)

    return (*read("train"), *read("test"), classes)


def _embedded_digits(seed: int) -> ImageSplits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, up-scaled to 3x32x32: a smoke-scale stand-in."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = n_test = len(y) // 5
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return ImageSplits(x[train], y[train], x[val], y[val], x[test], y[test],
                       [str(d) for d in range(10)], EMBEDDED)


# --------------------------------------------------------------------------------------------
# Batching and augmentation on tensors
# --------------------------------------------------------------------------------------------
def crop_flip_draws(count: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (2, count) in [0, 2 * pad] and horizontal flips (count,) for :func:`random_crop_flip`."""
    return torch.randint(0, 2 * pad + 1, (2, count), generator=generator), torch.rand(count, generator=generator) < 0.5


def random_crop_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop every image of a batch at its ``offsets`` (row, column) after reflect padding by ``pad``, and flip
    it horizontally where ``flips`` is set (see :func:`crop_flip_draws`; both on ``x``'s device)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], out.flip(3), out).contiguous()


class BatchLoader:
    """Iterates (inputs, targets) batches over in-memory uint8 images.

    Inputs are converted to float on ``device``, scaled to [0, 1], normalised by ``mean``/``std``
    when given, and augmented (random crop with padding, flip) when ``augment`` is set. With
    ``targets=None`` the target is the input itself (reconstruction).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor | None, batch_size: int, shuffle: bool = False,
                 augment: bool = False, mean=None, std=None, device: torch.device | str = "cpu", seed: int = 0,
                 pad: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.targets = None if targets is None else targets.to(self.device)
        self.batch_size, self.shuffle, self.augment, self.pad = batch_size, shuffle, augment, pad
        self.mean = None if mean is None else torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        # the epoch's random draws go to the device at once: a copy per batch would wait for the device each time
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        if self.augment:
            offsets, flips = (t.to(self.device) for t in crop_flip_draws(n, self.pad, self.generator))
        for start in range(0, n, self.batch_size):
            batch = slice(start, start + self.batch_size)
            index = batch if order is None else order[batch]
            x = self.images[index].float().div_(255)
            if self.augment:
                x = random_crop_flip(x, self.pad, offsets[:, batch], flips[batch])
            y = x if self.targets is None else self.targets[index]
            if self.mean is not None:
                x = (x - self.mean) / self.std
            yield x, y

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------------------------
# Photos for the autoencoder
# --------------------------------------------------------------------------------------------
def _read_rgb(path: Path, resize: tuple[int, int] | None = None) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if resize is not None:
            img = img.resize(resize, Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _embedded_photos() -> list[tuple[str, torch.Tensor]]:
    """Ten real RGB photographs shipped inside installed packages (no download).

    scikit-image: astronaut, chelsea, coffee, hubble_deep_field, immunohistochemistry, retina,
    rocket; scikit-learn: china, flower; matplotlib: grace_hopper.
    """
    import matplotlib.cbook
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    arrays = {name: getattr(skdata, name)() for name in
              ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")}
    samples = load_sample_images()
    arrays.update({Path(f).stem: img for f, img in zip(samples.filenames, samples.images)})
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        arrays["grace_hopper"] = np.asarray(Image.open(fh).convert("RGB"))
    return [(name, torch.from_numpy(np.array(a[..., :3], dtype=np.uint8)).permute(2, 0, 1).contiguous())
            for name, a in arrays.items()]


def grid_crops(image: torch.Tensor, size: int, max_crops: int | None = None) -> torch.Tensor:
    """Non-overlapping ``size`` x ``size`` crops on a grid; at most ``max_crops``, spread evenly."""
    _, h, w = image.shape
    corners = [(r, c) for r in range(0, h - size + 1, size) for c in range(0, w - size + 1, size)]
    if max_crops is not None and len(corners) > max_crops:
        keep = np.linspace(0, len(corners) - 1, max_crops).round().astype(int)
        corners = [corners[i] for i in keep]
    return torch.stack([image[:, r:r + size, c:c + size] for r, c in corners])


@dataclass
class PhotoSplits:
    """Photos split by source photo: training photos (cropped at random each epoch), fixed val/test crops."""

    train_photos: list[torch.Tensor]
    val_crops: torch.Tensor
    test_crops: torch.Tensor
    names: dict[str, list[str]]
    crop: int
    source: str

    def sizes(self) -> dict[str, int]:
        return {"train_photos": len(self.train_photos), "val_crops": len(self.val_crops),
                "test_crops": len(self.test_crops)}

    def loaders(self, batch_size: int, crops_per_photo: int, device: torch.device | str = "cpu",
                seed: int = 0) -> tuple["RandomCropLoader", BatchLoader, BatchLoader]:
        """Train (fresh random crops every epoch, flipped), validation and test loaders; targets are inputs."""
        train = RandomCropLoader(self.train_photos, self.crop, crops_per_photo, batch_size, device, seed)
        return (train, BatchLoader(self.val_crops, None, batch_size, device=device),
                BatchLoader(self.test_crops, None, batch_size, device=device))


class RandomCropLoader:
    """Cuts ``crops_per_photo`` random crops from every training photo each epoch and batches them."""

    def __init__(self, photos: list[torch.Tensor], crop: int, crops_per_photo: int, batch_size: int,
                 device: torch.device | str = "cpu", seed: int = 0):
        self.photos, self.crop, self.crops_per_photo = photos, crop, crops_per_photo
        self.batch_size, self.device = batch_size, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.photos) * self.crops_per_photo // self.batch_size)

    def _sample(self) -> torch.Tensor:
        crops = []
        for photo in self.photos:
            _, h, w = photo.shape
            rows = torch.randint(0, h - self.crop + 1, (self.crops_per_photo,), generator=self.generator)
            cols = torch.randint(0, w - self.crop + 1, (self.crops_per_photo,), generator=self.generator)
            crops += [photo[:, r:r + self.crop, c:c + self.crop] for r, c in zip(rows.tolist(), cols.tolist())]
        return torch.stack(crops)

    def __iter__(self):
        loader = BatchLoader(self._sample(), None, self.batch_size, shuffle=True, augment=True, pad=0,
                             device=self.device, seed=int(torch.randint(0, 2**31, (1,), generator=self.generator)))
        return iter(loader)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def load_photos(source: str | Path = EMBEDDED, crop: int = 128, val_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0, max_eval_crops_per_photo: int | None = 8) -> PhotoSplits:
    """Load RGB photos from a folder (searched recursively) or the embedded set, split by photo.

    No photo contributes crops to more than one split. Photos smaller than ``crop`` are skipped.
    """
    if str(source) == EMBEDDED:
        named = _embedded_photos()
    else:
        root = Path(source)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
        if not files:
            raise DataUnavailableError(
                f"no photos found under {str(root)!r}: give a folder of RGB images (jpg, png, ...), searched "
                f"recursively, or source='{EMBEDDED}' for scikit-image's bundled photos")
        named = [(str(p.relative_to(root)), _read_rgb(p)) for p in files]
    named = [(n, img) for n, img in named if min(img.shape[1:]) >= crop]
    if len(named) < 3:
        raise DataUnavailableError(f"{source!r} has {len(named)} photos of at least {crop}x{crop}; need 3 or more")
    order = torch.randperm(len(named), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * len(named)))
    n_test = max(1, round(test_fraction * len(named)))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}

    def crops(indices):
        return torch.cat([grid_crops(named[i][1], crop, max_eval_crops_per_photo) for i in indices])

    return PhotoSplits(
        train_photos=[named[i][1] for i in parts["train"]],
        val_crops=crops(parts["val"]),
        test_crops=crops(parts["test"]),
        names={split: [named[i][0] for i in idx] for split, idx in parts.items()},
        crop=crop,
        source=str(source),
    )
