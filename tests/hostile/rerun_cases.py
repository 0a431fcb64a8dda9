"""Rerun the bad-input, fault and interruption cases of issue 21 as a user would, and print how each ends.

    .venv/bin/python tests/hostile/rerun_cases.py

Each case prints ``clear error`` (an exception of the expected type whose message names what was wrong),
``handled`` (the right result without an error) or ``SILENT``/``UNCLEAR`` with what happened. The unit tests assert
the same behaviours; this script is the account of the reruns quoted in the closing note of issue 21.
"""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import pruning_utils as pu
from pruning_utils.engine import checkpoints, data, models
from pruning_utils.engine.train import ResumeMismatchError, fit
from pruning_utils.harness import pretrained
from pruning_utils.harness.parameters import ParameterError, check_parameters

RESULTS: list[tuple[str, str, str]] = []


def case(name: str, expected=Exception, match: str = ""):
    """Run the decorated function: it raises ``expected`` with ``match`` in its message, or returns True."""
    def run(function):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = function()
        except expected as err:
            verdict = "clear error" if match.lower() in str(err).lower() else "UNCLEAR"
            RESULTS.append((name, verdict, str(err).splitlines()[0][:110]))
            return function
        except Exception as err:  # noqa: BLE001 - any other error is a finding
            RESULTS.append((name, "UNCLEAR", f"{type(err).__name__}: {str(err)[:100]}"))
            return function
        RESULTS.append((name, "handled" if outcome is True else "SILENT", str(outcome)[:110]))
        return function
    return run


def loaders(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return data.BatchLoader(x, y, 16, shuffle=True), data.BatchLoader(x, y, 16)


def npz(tmp: Path, **arrays) -> Path:
    base = {"x_train": np.zeros((8, 32, 32, 3), np.uint8), "y_train": np.arange(8) % 10,
            "x_test": np.zeros((4, 32, 32, 3), np.uint8), "y_test": np.arange(4)}
    path = tmp / f"d{len(list(tmp.iterdir()))}.npz"
    np.savez(path, **{**base, **arrays})
    return path


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    model = models.vgg16(width=0.0625, classifier="mlp")
    schedule = pu.make_schedule("step", 1, delta=0.5)

    @case("1. explicit teacher left unchanged by pruning")
    def _():
        teacher = copy.deepcopy(model).train()
        before = copy.deepcopy(teacher.state_dict())
        train, val = loaders()
        pu.prune(pu.attach_branches(copy.deepcopy(teacher), 0.5), train, val, schedule, teacher=teacher,
                 progress=False)
        return all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()) or "baseline changed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp / "pwned",))

    @case("2. crafted CIFAR batch file does not run code", match="refus")
    def _():
        folder = tmp / "cifar-10-batches-py"
        folder.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
        try:
            data.load_classification(tmp)
        finally:
            assert not (tmp / "pwned").exists(), "code ran"

    digits = data.load_classification("embedded")
    other = copy.deepcopy(digits)
    other.x_train[0, 0, 0, 0] ^= 1

    @case("3a. a baseline trained on other data is not reused")
    def _():
        path = pretrained.baseline_checkpoint_path
        return path("vgg16", digits, 0.0625, 1, 0, lr=0.05) != path("vgg16", other, 0.0625, 1, 0, lr=0.05) or "same"

    @case("3b. --baseline-lr changes the baseline that is used")
    def _():
        path = pretrained.baseline_checkpoint_path
        return path("vgg16", digits, 0.0625, 1, 0, lr=0.05) != path("vgg16", digits, 0.0625, 1, 0, lr=1e6) or "same"

    @case("3c. a checkpoint at the same path from another run is refused", ResumeMismatchError, "lr")
    def _():
        train, val = loaders()
        fit(copy.deepcopy(model), train, val, task="classification", epochs=1, lr=0.01, checkpoint=tmp / "b.pt",
            progress=False)
        fit(copy.deepcopy(model), train, val, task="classification", epochs=1, lr=0.1, checkpoint=tmp / "b.pt",
            progress=False)

    @case("4. resume with another recipe stops and names the difference", ResumeMismatchError, "recipe.lr")
    def _():
        train, val = loaders()
        folder = tmp / "stages"
        pu.prune(pu.attach_branches(copy.deepcopy(model), 0.5), train, val, schedule, pu.Recipe(lr=0.01),
                 checkpoint_dir=folder, max_stages=1, progress=False)
        pu.prune(pu.attach_branches(copy.deepcopy(model), 0.5), train, val, schedule,
                 pu.Recipe(lr=0.05, lr_schedule="plateau"), checkpoint_dir=folder, progress=False)

    @case("6. every stage rolled back: the run fails", pu.PruningFailedError, "learning rate")
    def _():
        train, val = loaders()
        pu.prune(pu.attach_branches(copy.deepcopy(model), 0.5), train, val, schedule,
                 pu.Recipe(lr=1e12, lr_schedule="constant", momentum=0.0, loss="ce"), progress=False)

    for label, arrays, match in [("7a. labels out of range", {"y_train": np.arange(8) + 5}, "0..9"),
                                 ("7b. float labels", {"y_train": np.arange(8) / 2}, "integer"),
                                 ("7c. label and image counts differ", {"y_train": np.arange(7)}, "7 labels"),
                                 ("7d. labels of shape (N, 1) are flattened", {"y_train": (np.arange(8) % 10)[:, None]},
                                  "")]:
        @case(label, ValueError, match)
        def _(arrays=arrays):
            return data.load_classification(npz(tmp, **arrays)).y_train.shape == (8,) or "not flattened"

    @case("7e. class folder without images", Exception, "no images")
    def _():
        root = tmp / "folders"
        for split in ("train", "test"):
            (root / split / "cat").mkdir(parents=True)
        data.load_classification(root)

    @case("7f. x.view(x.shape[0], -1) branches and folds")
    def _():
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.relu, self.fc = nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8 * 30 * 30, 10)

            def forward(self, x):
                x = self.relu(self.conv(x))
                return self.fc(x.view(x.shape[0], -1))

        net = pu.attach_branches(Net(), 0.5)
        pu.set_alpha(net, 0.0)
        x = torch.randn(2, 3, 32, 32)
        return torch.allclose(pu.fold(net)(x), net(x), atol=1e-5) or "fold differs"

    @case("7g. Linear -> MaxPool1d -> Linear refused at attach", pu.method.branches.UnsupportedModelError, "MaxPool1d")
    def _():
        pu.attach_branches(nn.Sequential(nn.Linear(8, 8), nn.MaxPool1d(2), nn.Linear(4, 2)), 0.5)

    for label, ratio in [("7h. np.float32 keep ratio", np.float32(0.5)), ("7i. 0-d tensor keep ratio", torch.tensor(0.5))]:
        @case(label)
        def _(ratio=ratio):
            return bool(pu.attach_branches(copy.deepcopy(model), ratio)) or "refused"

    @case("7j. truncated checkpoint names the file and says to delete it", Exception, "delet")
    def _():
        path = tmp / "whole.pt"
        checkpoints.save_checkpoint(path, model=model.state_dict())
        path.write_bytes(path.read_bytes()[:1000])
        checkpoints.load_checkpoint(path)

    @case("7k. load_plain on an .npz says what it expects", Exception, "save_plain")
    def _():
        pu.load_plain(npz(tmp))

    @case("7l. a killed write's temporary file is cleaned at the next write")
    def _():
        target = tmp / "out.json"
        code = ("import os, sys; from pruning_utils.engine.checkpoints import atomic_write\n"
                "atomic_write(sys.argv[1], lambda tmp: (open(tmp, 'w').write('x'), os.kill(os.getpid(), 9)))")
        subprocess.run([sys.executable, "-c", code, str(target)], check=False)
        left = list(tmp.glob("out.json*.tmp"))
        checkpoints.atomic_write(target, lambda t: Path(t).write_text("{}"))
        return (bool(left) and not list(tmp.glob("out.json*.tmp"))) or f"temporaries left: {left}"

    @case("7m. two writers of one output: the second fails at once", Exception, "another process")
    def _():
        target = tmp / "shared.json"
        checkpoints.atomic_write(target, lambda t: checkpoints.atomic_write(target, lambda u: None))

    @case("8a. unknown notebook parameter", ParameterError, "NOT_A_PARAM")
    def _():
        check_parameters({"__annotations__": {"VGG_WIDTH": float | None}, "VGG_WIDTH": None, "NOT_A_PARAM": 3})

    @case("8b. VGG_WIDTH abc", ParameterError, "VGG_WIDTH")
    def _():
        check_parameters({"__annotations__": {"VGG_WIDTH": float | None}, "VGG_WIDTH": "abc"})

    @case("8c. notebooks --only 01 99", SystemExit)
    def _():
        from pruning_utils.harness import notebooks
        notebooks.main(["--only", "01", "99"])

    width = max(len(name) for name, _, _ in RESULTS)
    for name, verdict, detail in RESULTS:
        print(f"{name.ljust(width)}  {verdict:11}  {detail}")
    bad = [r for r in RESULTS if r[1] in ("SILENT", "UNCLEAR")]
    print(f"{len(RESULTS)} cases rerun: {len(RESULTS) - len(bad)} clear or handled, {len(bad)} silent or unclear")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
