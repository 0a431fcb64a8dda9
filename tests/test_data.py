import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from pruning_utils.engine import data


def _unique_npz(path, n_train=60, n_test=40):
    """Images whose first pixel encodes their index, so splits can be checked for overlap."""
    def images(n, offset):
        x = np.zeros((n, 32, 32, 3), dtype=np.uint8)
        x[:, 0, 0, 0] = (np.arange(n) + offset) % 256
        x[:, 0, 0, 1] = (np.arange(n) + offset) // 256
        return x
    np.savez(path, x_train=images(n_train, 0), y_train=np.arange(n_train) % 10,
             x_test=images(n_test, 1000), y_test=np.arange(n_test) % 10)
    return path


def _ids(x):
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 1, 0, 0].long()).tolist())


def test_embedded_digits_are_3x32x32_with_disjoint_seeded_splits():
    a = data.load_classification("embedded", seed=1)
    b = data.load_classification("embedded", seed=1)
    assert a.x_train.shape[1:] == (3, 32, 32) and a.x_train.dtype == torch.uint8
    assert sum(a.sizes().values()) == 1797 and a.num_classes == 10
    assert torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.y_val, data.load_classification("embedded", seed=2).y_val)


@pytest.mark.parametrize("val_from", ["train", "test"])
def test_npz_splits_do_not_leak(tmp_path, val_from):
    splits = data.load_classification(_unique_npz(tmp_path / "d.npz"), val_size=10, val_from=val_from, seed=3)
    train, val, test = _ids(splits.x_train), _ids(splits.x_val), _ids(splits.x_test)
    assert len(val) == 10 and not (train & val) and not (train & test) and not (val & test)
    assert len(train) + len(val) + len(test) == 100


def test_image_folder_source(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 40, 3), i * 40, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    splits = data.load_classification(tmp_path, val_size=2)
    assert splits.classes == ["cat", "dog"]
    assert splits.x_train.shape == (6, 3, 32, 32) and len(splits.y_val) == 2 and len(splits.y_test) == 4


def test_missing_data_offline_names_the_three_ways(tmp_path):
    with pytest.raises(data.DataUnavailableError) as err:
        data.load_classification(tmp_path / "nowhere")
    message = str(err.value)
    assert "download" in message and ".npz" in message and "image folder" in message


def test_bad_split_arguments(tmp_path):
    path = _unique_npz(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="val_from"):
        data.load_classification(path, val_from="elsewhere")
    with pytest.raises(ValueError, match="val_size"):
        data.load_classification(path, val_size=1000)


def test_random_crop_flip_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = data.random_crop_flip(x, 0, *data.crop_flip_draws(2, 0, torch.Generator().manual_seed(0)))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    offsets, flips = data.crop_flip_draws(2, 2, torch.Generator().manual_seed(0))
    assert offsets.shape == (2, 2) and 0 <= offsets.min() and offsets.max() <= 4 and flips.dtype == torch.bool
    shifted = data.random_crop_flip(x, 2, torch.tensor([[2, 0], [2, 4]]), torch.tensor([False, True]))
    assert torch.equal(shifted[0], x[0])  # offset (2, 2) of a 2-pixel padding: the image itself
    assert torch.equal(shifted[1, :, 2:, 2:], x[1, :, :6, 2:].flip(2))  # 2 rows down, 2 columns left, flipped


def test_batch_loader_normalises_and_covers_every_sample():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    loader = data.BatchLoader(images, torch.arange(10), 4, shuffle=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    x, y = batches[0]
    assert torch.allclose(x, (images[y].float() / 255 - 0.5) / 0.25)


def test_photos_split_by_photo_and_fixed_eval_grid(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.jpg")
    photos = data.load_photos(tmp_path, crop=128, seed=0)
    names = photos.names
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])
    assert len(names["train"]) == 8 and photos.val_crops.shape[1:] == (3, 128, 128)
    assert len(photos.val_crops) == 6  # 2 x 3 non-overlapping crops of a 300 x 400 photo
    train, val, _ = photos.loaders(batch_size=4, crops_per_photo=2)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 128, 128) and torch.equal(x, y) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(next(iter(val))[0], next(iter(val))[0])


def test_embedded_photos_and_missing_photo_folder(tmp_path):
    photos = data.load_photos("embedded")
    assert len(photos.train_photos) >= 6 and len(photos.val_crops) > 0
    with pytest.raises(data.DataUnavailableError, match="no photos"):
        data.load_photos(tmp_path)


def test_shared_cifar_subset_follows_the_reference_protocol(shared_cifar):
    splits = data.load_classification(shared_cifar)
    assert splits.sizes() == {"train": 25000, "val": 5000, "test": 5000}
    assert splits.y_val[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_train_subset_is_seeded_and_keeps_the_full_normalisation():
    images = data.load_classification("embedded")
    full, val, _ = images.loaders(32)
    a, _, _ = images.loaders(32, seed=1, train_size=100)
    b, _, _ = images.loaders(32, seed=1, train_size=100)
    c, _, _ = images.loaders(32, seed=2, train_size=100)
    assert len(a.images) == 100 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.mean, full.mean) and torch.equal(a.std, full.std) and len(val.images) == len(images.y_val)
    with pytest.raises(ValueError, match="train_size"):
        images.loaders(32, train_size=len(images.y_train) + 1)


# --------------------------------------------------------------------------------------------
# Nothing silent: CIFAR batch files, labels, class folders
# --------------------------------------------------------------------------------------------
def _cifar_batches(folder, n=4, labels=None, data_key=b"data"):
    """A folder in torchvision's CIFAR-10 format: pickled dicts with N x 3072 uint8 data and a label list."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {data_key: rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": list(range(n)) if labels is None else labels, "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


class _Payload:
    """Unpickling this creates ``marker``: what a crafted data file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("data_key", [b"data", "data"])
def test_cifar_batch_folder_loads(tmp_path, data_key):
    folder = _cifar_batches(tmp_path / "cifar-10-batches-py", data_key=data_key)
    splits = data.load_classification(tmp_path, val_size=2)
    assert splits.x_train.shape == (20, 3, 32, 32) and splits.y_train.tolist() == [0, 1, 2, 3] * 5
    raw = pickle.loads((folder / "data_batch_1").read_bytes())[data_key]
    assert torch.equal(splits.x_train[0], torch.from_numpy(raw[0].reshape(3, 32, 32)))


def test_crafted_cifar_batch_is_refused_without_running_code(tmp_path):
    folder = _cifar_batches(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": _Payload(marker), "labels": []}))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_3.*posix\.mkdir|data_batch_3.*os\.mkdir"):
        data.load_classification(tmp_path)
    assert not marker.exists()


def _npz(path, **override):
    arrays = dict(x_train=np.zeros((6, 32, 32, 3), np.uint8), y_train=np.arange(6) % 3,
                  x_test=np.zeros((4, 32, 32, 3), np.uint8), y_test=np.arange(4) % 3)
    np.savez(path, **{**arrays, **override})
    return path


@pytest.mark.parametrize("override, message", [
    (dict(y_train=np.array([0, 1, 2, 3, 4, 10])), r"y_train: labels must lie in 0\.\.9"),
    (dict(y_test=np.array([0, -1, 2, 3])), r"y_test: labels must lie in 0\.\.9"),
    (dict(y_train=np.linspace(0, 1, 6)), r"y_train: labels must be integer.*float64"),
    (dict(y_train=np.arange(5)), r"y_train: 5 labels for 6 images"),
    (dict(y_test=np.zeros((2, 2), np.int64)), r"y_test: labels must be a vector.*\(2, 2\)"),
    (dict(x_test=np.zeros((4, 32, 32), np.uint8)), r"x_test: expected uint8 images"),
    (dict(y_train=np.arange(6) % 3, class_names=np.array(["a", "b"])), r"y_train: labels must lie in 0\.\.1"),
])
def test_bad_npz_labels_are_refused_naming_the_array(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        data.load_classification(_npz(tmp_path / "d.npz", **override), val_size=2)


def test_n_by_1_labels_are_flattened(tmp_path):
    splits = data.load_classification(_npz(tmp_path / "d.npz", y_train=(np.arange(6) % 3)[:, None]), val_size=2)
    assert splits.y_train.tolist() == [0, 1, 2, 0, 1, 2]


def test_bad_cifar_batch_labels_name_the_file(tmp_path):
    _cifar_batches(tmp_path / "cifar-10-batches-py", labels=[0, 1, 2, 12])
    with pytest.raises(ValueError, match=r"data_batch_1: labels must lie in 0\.\.9"):
        data.load_classification(tmp_path)


def test_image_folder_class_without_images_is_refused(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / cls / "0.png")
    (tmp_path / "test" / "dog" / "0.png").rename(tmp_path / "test" / "dog" / "0.txt")
    with pytest.raises(data.DataUnavailableError, match=r"test/dog holds no images"):
        data.load_classification(tmp_path)
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(ValueError, match=r"class folders \['bird'\]"):
        data.load_classification(tmp_path)
