import os

import pytest
import torch

# no progress bars in the kernels nbval and papermill start: thousands of widget messages can crowd out
# the kernel's idle message and make nbval time out waiting for output
os.environ["TQDM_DISABLE"] = "1"

from pruning_utils.config import SHARED_DATA_DIR, seed_everything


def pytest_collection_modifyitems(items):
    """Mark the tier that executes notebooks (nbval's cells, papermill runs) so ``-m "not notebooks"`` skips it;
    test_sweep marks its own notebook-running tests."""
    for item in items:
        if item.path.suffix == ".ipynb" or item.path.name == "test_notebooks.py":
            item.add_marker(pytest.mark.notebooks)


@pytest.fixture(autouse=True)
def _seeded():
    seed_everything(0)
    yield


@pytest.fixture
def shared_cifar():
    path = SHARED_DATA_DIR / "cifar10_subset.npz"
    if not path.is_file():
        pytest.skip(f"shared CIFAR-10 subset not found at {path}")
    return path


@pytest.fixture
def shared_photos():
    path = SHARED_DATA_DIR / "photos"
    if not path.is_dir():
        pytest.skip(f"shared photos not found at {path}")
    return path


def tiny_batch(n=8, size=32, channels=3):
    return torch.rand(n, channels, size, size)
