"""Adversarial training of a DCGAN, and batches of latent codes for pruning its generator against a teacher.

:func:`train_gan` trains the generator and the discriminator with the non-saturating loss of Goodfellow et al.
(Adam, the DCGAN paper's 2e-4 and betas 0.5, 0.999), writing an atomic, resumable checkpoint after every epoch.
:class:`LatentLoader` turns a trained generator into a regression task: batches ``(z, teacher(z))``, fresh codes
every epoch for training, fixed ones for validation and test.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import show_progress
from .checkpoints import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from .train import NonFiniteLossError, check_resume

BETAS = (0.5, 0.999)  # Adam's betas in the DCGAN paper


class LatentLoader:
    """Batches ``(z, teacher(z))`` of latent codes z ~ N(0, I) (N x ``latent_dim`` x 1 x 1) and the ``teacher``
    generator's images for them (a frozen copy in eval mode; None: the target is None, for BatchNorm statistics).

    ``fresh``: new codes every epoch (training: a pruned generator sees the whole latent space); otherwise the same
    ``count`` codes every time (validation, test). The draws resume from :meth:`state_dict`.
    """

    def __init__(self, latent_dim: int, count: int, batch_size: int, *, teacher: nn.Module | None = None,
                 fresh: bool = False, seed: int = 0, device: torch.device | str = "cpu"):
        if count < 1 or batch_size < 1:
            raise ValueError(f"count and batch_size must be at least 1, got {count} and {batch_size}")
        self.latent_dim, self.count, self.batch_size, self.fresh = latent_dim, count, batch_size, fresh
        self.teacher = None if teacher is None else copy.deepcopy(teacher).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.codes = None if fresh else self._draw()
        self._targets = None  # the teacher's images for fixed codes, computed once

    def _draw(self) -> torch.Tensor:
        return torch.randn(self.count, self.latent_dim, 1, 1, generator=self.generator)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    @torch.no_grad()
    def _target(self, z: torch.Tensor) -> torch.Tensor | None:
        return None if self.teacher is None else self.teacher(z)

    def __iter__(self):
        codes = self._draw() if self.fresh else self.codes
        if not self.fresh and self.teacher is not None and self._targets is None:
            self._targets = [self._target(z.to(self.device)) for z in codes.split(self.batch_size)]
        for index, z in enumerate(codes.split(self.batch_size)):
            z = z.to(self.device)
            yield z, (self._targets[index] if self._targets is not None else self._target(z))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _gan_step(generator: nn.Module, discriminator: nn.Module, real: torch.Tensor, z: torch.Tensor,
              optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
    """One discriminator step on a real and a fake batch, then one generator step (non-saturating loss)."""
    opt_g, opt_d = optimizers
    fake = generator(z)
    real_logits, fake_logits = discriminator(real), discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    logits = discriminator(fake)
    g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach()}


def train_gan(generator: nn.Module, discriminator: nn.Module, real_loader, *, latent_dim: int, epochs: int,
              lr: float = 2e-4, seed: int = 0, checkpoint: str | Path | None = None, meta: dict | None = None,
              progress: bool = True) -> list[dict]:
    """Train the GAN for ``epochs`` passes over ``real_loader`` (batches ``(images, _)`` on [0, 1]); return the
    per-epoch history (mean losses, the discriminator's mean output on real and fake images, seconds).

    With ``checkpoint`` set, both networks, both optimisers, the data order and the RNG are written atomically after
    every epoch, and an existing checkpoint there is resumed; one written with other settings (these arguments and
    ``meta``) is refused. Raises :class:`~pruning_utils.engine.train.NonFiniteLossError` on a NaN loss.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be non-negative, got {epochs}")
    device = next(generator.parameters()).device
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=BETAS)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=BETAS)
    codes = torch.Generator().manual_seed(seed)
    settings = {"epochs": epochs, "lr": lr, "betas": list(BETAS), "latent_dim": latent_dim, "loss": "non-saturating",
                **(meta or {})}
    history: list[dict] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        check_resume(state.get("settings"), settings, checkpoint)
        load_model_state(generator, state["generator"], source=f"generator in {checkpoint}")
        load_model_state(discriminator, state["discriminator"], source=f"discriminator in {checkpoint}")
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        real_loader.load_state_dict(state["loader"])
        codes.set_state(state["codes"])
        set_rng_state(state["rng"])
        history = list(state["history"])
    generator.train()
    discriminator.train()
    bar = tqdm(range(len(history), epochs), desc="GAN epochs", disable=not show_progress(progress))
    for epoch in bar:
        start, sums, count = time.perf_counter(), {}, 0
        for real, _ in tqdm(real_loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show_progress(progress)):
            z = torch.randn(len(real), latent_dim, 1, 1, generator=codes).to(device)
            step = _gan_step(generator, discriminator, real, z, (opt_g, opt_d))
            sums = {k: sums.get(k, 0.0) + v * len(real) for k, v in step.items()}
            count += len(real)
        record = {"epoch": epoch + 1, **{k: float(v) / count for k, v in sums.items()},
                  "seconds": time.perf_counter() - start}
        if not (math.isfinite(record["d_loss"]) and math.isfinite(record["g_loss"])):
            raise NonFiniteLossError(f"GAN epoch {epoch + 1}: a loss became non-finite ({record}); lower lr "
                                     f"(it was {lr:g}) and delete {checkpoint} to start afresh")
        history.append(record)
        bar.set_postfix(d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, generator=generator.state_dict(), discriminator=discriminator.state_dict(),
                            opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), loader=real_loader.state_dict(),
                            codes=codes.get_state(), rng=rng_state(), history=history, settings=settings)
    return history
