import math

import pytest
import torch
from torch import nn

from pruning_utils.config import seed_everything
from pruning_utils.engine import checkpoints, data, models, tasks, train
from pruning_utils.engine.speed import Speed


def _loaders(n=64, batch=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return (data.BatchLoader(x, y, batch, shuffle=True, augment=True, seed=1),
            data.BatchLoader(x[:32], y[:32], batch))


def test_loss_falls_on_a_small_batch():
    model = models.vgg16(width=0.125)
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = tasks.CLASSIFICATION.supervised_loss()
    first = None
    for _ in range(30):
        loss, _ = loss_fn(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


def test_evaluate_reports_accuracy_and_psnr():
    x = torch.rand(4, 3, 8, 8)
    assert train.evaluate(nn.Identity(), [(x, x)], "reconstruction")["psnr"] >= 100
    logits = torch.eye(3)
    assert train.evaluate(nn.Identity(), [(logits, torch.tensor([0, 1, 0]))], "classification")["acc"] == pytest.approx(200 / 3)


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    model = models.vgg16(width=0.125)
    path = checkpoints.save_checkpoint(tmp_path / "a" / "c.pt", model=model.state_dict(), history=[{"epoch": 1}])
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]
    state = checkpoints.load_checkpoint(path)
    other = models.vgg16(width=0.125)
    checkpoints.load_model_state(other, state["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_checkpoint_from_another_architecture_is_explained(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", model=models.vgg16(width=0.25).state_dict())
    with pytest.raises(ValueError, match="shape mismatch.*features.0.weight"):
        checkpoints.load_model_state(models.vgg16(width=0.125), checkpoints.load_checkpoint(path)["model"])
    with pytest.raises(ValueError, match="missing"):
        checkpoints.load_model_state(models.vgg16(width=0.25, classifier="mlp"), checkpoints.load_checkpoint(path)["model"])


def _fit(epochs, checkpoint=None):
    seed_everything(0)
    model = models.vgg16(width=0.125, classifier="mlp")
    tr, va = _loaders()
    history = train.fit(model, tr, va, task="classification", epochs=epochs, lr=0.05, checkpoint=checkpoint,
                        progress=False)
    return model, history


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch):
    full_model, full_history = _fit(3)
    ckpt = tmp_path / "run.pt"
    calls = {"n": 0}
    real_evaluate = train.evaluate

    def interrupt_after_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        _fit(3, ckpt)
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    saved = checkpoints.load_checkpoint(ckpt)
    assert len(saved["history"]) == saved["epoch"] == 2
    model, history = _fit(3, ckpt)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["train_loss"] for h in history] == pytest.approx([h["train_loss"] for h in full_history], rel=1e-5)
    for a, b in zip(model.state_dict().values(), full_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_bad_training_arguments():
    model = models.vgg16(width=0.125)
    tr, va = _loaders()
    with pytest.raises(ValueError, match="task"):
        train.fit(model, tr, va, task="segmentation", epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        train.fit(model, tr, va, task="classification", epochs=1, lr=0.1, optimizer="lbfgs")


def test_speed_options_train_the_same_model():
    def trained(speed):
        seed_everything(0)
        model = models.vgg16(width=0.0625)
        train_loader, val_loader = _loaders(n=32)
        history = train.fit(model, train_loader, val_loader, task="classification", epochs=1, lr=0.01,
                            progress=False, speed=speed)
        return model, history[0]

    plain, plain_record = trained(Speed())
    nhwc, nhwc_record = trained(Speed(channels_last=True))
    assert next(nhwc.parameters()).is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), nhwc.parameters()):
        assert torch.allclose(a, b.contiguous(), atol=1e-4)
    assert nhwc_record["val_loss"] == pytest.approx(plain_record["val_loss"], rel=1e-3)
    bf16, bf16_record = trained(Speed(bf16=True))  # bfloat16 autocast: lower precision, same training
    assert next(bf16.parameters()).dtype == torch.float32 and math.isfinite(bf16_record["train_loss"])
    assert bf16_record["train_loss"] == pytest.approx(plain_record["train_loss"], rel=0.05)


def _nan_on_second_batch(calls):
    def loss_fn(model, x, y):
        calls.append(len(x))
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        return (loss * float("nan") if len(calls) == 2 else loss), out
    return loss_fn


def test_non_finite_loss_is_caught_before_the_step_on_cpu_and_at_the_next_read_otherwise():
    batches = [(torch.randn(2, 4), torch.tensor([0, 1]))] * 6
    model, calls = nn.Linear(4, 2), []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(train.NonFiniteLossError, match="first 4 samples"):
        train.train_epoch(model, batches, opt, _nan_on_second_batch(calls), progress=False)
    assert len(calls) == 2 and all(torch.isfinite(p).all() for p in model.parameters())

    calls.clear()  # reading every 4 batches, as on an accelerator: found at the fourth
    with pytest.raises(train.NonFiniteLossError, match="first 8 samples"):
        train.train_epoch(model, batches, opt, _nan_on_second_batch(calls), progress=False, check_every=4)
    assert len(calls) == 4
    calls.clear()  # and after the last batch, whatever the interval
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(train.NonFiniteLossError, match="first 12 samples"):
        train.train_epoch(model, batches, opt, _nan_on_second_batch(calls), progress=False, check_every=50)


@pytest.mark.parametrize("device, expected", [("cpu", Speed()), ("cuda", Speed(True, True, False))])
def test_speed_for_device_turns_the_usual_options_on_for_cuda_only(device, expected):
    assert Speed.for_device(device) == expected
    assert Speed.for_device(device, channels_last=False, bf16=True, compile=True) == Speed(False, True, True)
