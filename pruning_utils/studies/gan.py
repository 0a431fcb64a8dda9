"""The DCGAN experiment of notebook 11: prune the generator against the original generator as teacher.

The pruned generator regresses the original's image for the same latent code (the seeds' logit regression carried
over to images: mean squared error on the [0, 1] pixel scale, so the task is ``reconstruction`` and its PSNR is the
PSNR of pruned against original images), with the kept discriminator's non-saturating loss as an option
(:class:`AdversarialRegression`). How close the generated distribution is to the real one is measured by a Fréchet
distance in the features of *our own* CIFAR-10 classifier (:func:`frechet_distance`): Inception weights cannot be
downloaded here, so this is not FID and its values do not compare with published FIDs.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from ..config import Profile, pick, resolve_path
from ..engine.data import EMBEDDED, ImageSplits, load_classification
from ..engine.gan import LatentLoader
from ..engine.sizes import count_macs, count_parameters
from ..engine.tasks import RECONSTRUCTION
from ..harness.pretrained import dcgan_baseline, vgg_baseline
from ..method.branches import check_keep_ratio
from ..method.pipeline import PruningResult, prune_and_fold, stage_outputs
from ..method.recipe import Recipe
from .autoencoders import RECIPE as AUTOENCODER_RECIPE

# The generator's recipe: it regresses images as the autoencoder does (Adam at 1e-3, no weight decay, the
# reconstruction loss), so it prunes with the autoencoder's recipe.
RECIPE: Recipe = AUTOENCODER_RECIPE
FEATURE_BATCH = 500  # images per forward of the feature network


@dataclass(frozen=True)
class AdversarialRegression:
    """``loss_fn(model, z, target)`` for the pruning loop: mean squared error to the teacher's image plus ``weight``
    times the non-saturating loss of the frozen ``discriminator`` (eval mode) on the pruned generator's image."""

    discriminator: nn.Module = field(repr=False, compare=False)
    weight: float

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"the adversarial weight must be non-negative, got {self.weight}")
        self.discriminator.eval().requires_grad_(False)

    def __call__(self, model: nn.Module, z: torch.Tensor, target: torch.Tensor):
        out = model(z)
        return F.mse_loss(out, target) + self.weight * F.softplus(-self.discriminator(out)).mean(), out


@dataclass
class FeatureNetwork:
    """The penultimate features (the classifier's input) of a CIFAR-10 classifier for images on [0, 1]."""

    classifier: nn.Sequential
    mean: torch.Tensor
    std: torch.Tensor
    description: str

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        body = self.classifier.eval()[:-1]  # everything but the last layer
        device = self.mean.device
        parts = [body((batch.to(device).float() - self.mean) / self.std).flatten(1).cpu()
                 for batch in images.split(FEATURE_BATCH)]
        return torch.cat(parts).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """The Fréchet distance of Gaussians fitted to two feature sets (rows are samples), as FID computes it:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. ``eps`` on the covariances' diagonals keeps the root
    defined where a feature never varies (a dead ReLU), as pytorch-fid does."""
    if a.ndim != 2 or a.shape[1:] != b.shape[1:] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (samples x features) of equal dimension and at least two samples "
                         f"each, got shapes {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    offset = np.eye(a.shape[1]) * eps
    cov_a, cov_b = np.cov(a, rowvar=False) + offset, np.cov(b, rowvar=False) + offset
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


@torch.inference_mode()
def generate(generator: nn.Module, codes) -> torch.Tensor:
    """The generator's images (eval mode, on the CPU) for a tensor of latent codes, or for every batch of a loader
    of ``(codes, _)``."""
    generator.eval()
    device = next(generator.parameters()).device
    batches = [(codes, None)] if isinstance(codes, torch.Tensor) else codes
    return torch.cat([generator(z.to(device)).float().cpu() for z, _ in batches])


@dataclass
class GanSetup:
    """Real images, the trained GAN, the latent-code loaders of the pruning task and the feature network."""

    images: ImageSplits
    generator: nn.Module
    discriminator: nn.Module
    history: list[dict]
    loaders: tuple[LatentLoader, LatentLoader, LatentLoader]  # (train: fresh codes, validation, test: fixed codes)
    features: FeatureNetwork
    latent_dim: int
    sample_codes: torch.Tensor
    progress: bool

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.latent_dim, 1, 1)

    @functools.cached_property
    def real_test_features(self) -> np.ndarray:
        """The feature network's features of the real test images (computed once)."""
        return self.features(self.images.x_test.float().div(255))

    @functools.cached_property
    def original_test_features(self) -> np.ndarray:
        """The feature network's features of the original generator's images for the test codes (computed once)."""
        return self.features(generate(self.generator, self.loaders[2]))

    def sizes(self) -> dict:
        """Parameters and MACs per image of both networks."""
        return {"generator": {"params": count_parameters(self.generator),
                              "macs": count_macs(self.generator, self.input_shape)},
                "discriminator": {"params": count_parameters(self.discriminator),
                                  "macs": count_macs(self.discriminator, tuple(self.images.x_train.shape[1:]))}}


def setup(profile: Profile, source=None, *, width=None, epochs=None, latent_dim: int = 100, batch_size: int = 64,
          lr: float = 2e-4, codes_per_epoch=None, classifier_width=None, classifier_epochs=None, seed: int = 0,
          device=None, progress: bool = True, samples: int = 8) -> GanSetup:
    """Load the images, train (or load) the DCGAN and the feature classifier (the profile's defaults for None).

    The pruning task's codes: ``codes_per_epoch`` fresh codes per training epoch (None: as many as training images),
    and fixed validation and test codes, as many as the validation and test images. The teacher is the trained
    generator. ``samples``: fixed codes for the sample grids.
    """
    source = pick(source, profile.classification_source)
    images = load_classification(source if source == EMBEDDED else str(resolve_path(source)), seed=seed)
    generator, discriminator, history, _ = dcgan_baseline(
        images, width=pick(width, profile.gan_width), epochs=pick(epochs, profile.gan_epochs), latent_dim=latent_dim,
        batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress)
    device = next(generator.parameters()).device
    sizes = images.sizes()
    codes = dict(latent_dim=latent_dim, batch_size=batch_size, teacher=generator, device=device)
    loaders = (LatentLoader(count=pick(codes_per_epoch, sizes["train"]), fresh=True, seed=seed + 10, **codes),
               LatentLoader(count=sizes["val"], seed=seed + 11, **codes),
               LatentLoader(count=sizes["test"], seed=seed + 12, **codes))
    classifier_width, classifier_epochs = pick(classifier_width, profile.vgg_width), pick(classifier_epochs,
                                                                                          profile.vgg_epochs)
    classifier, _, _ = vgg_baseline(images, width=classifier_width, epochs=classifier_epochs,
                                    batch_size=profile.batch_size, lr=profile.lr, seed=seed, device=device,
                                    progress=progress)
    stats = {k: torch.tensor(v, device=device).view(1, -1, 1, 1) for k, v in (("mean", images.mean),
                                                                            ("std", images.std))}
    features = FeatureNetwork(classifier, **stats, description=f"VGG16-BN width {classifier_width:g}, "
                              f"{classifier_epochs} epochs on {Path(str(source)).name}: its classifier's input")
    sample_codes = torch.randn(samples, latent_dim, 1, 1, generator=torch.Generator().manual_seed(seed + 13))
    return GanSetup(images, generator, discriminator, history, loaders, features, latent_dim, sample_codes, progress)


def distances(gan: GanSetup, generator: nn.Module) -> dict[str, float]:
    """Fréchet distances in the feature network's space of ``generator``'s images for the test codes: to the real
    test images (``fd_real``) and to the original generator's images for the same codes (``fd_original``)."""
    generated = gan.features(generate(generator, gan.loaders[2]))
    return {"fd_real": frechet_distance(generated, gan.real_test_features),
            "fd_original": frechet_distance(generated, gan.original_test_features)}


def reference_distances(gan: GanSetup) -> dict[str, float]:
    """The scale of :func:`distances`: the original generator against the real test images, and the floor, as many
    real training images against the real test images."""
    train = gan.features(gan.images.x_train[:len(gan.images.x_test)].float().div(255))
    return {"original_fd_real": frechet_distance(gan.original_test_features, gan.real_test_features),
            "real_train_fd_real": frechet_distance(train, gan.real_test_features)}


def check_settings(*, keep_ratio, recipe: Recipe, epochs: int, adversarial_weights=()) -> None:
    """Raise a ValueError on a setting of the generator's pruning that cannot run, before the GAN trains."""
    check_keep_ratio(keep_ratio)
    recipe.check(epochs, RECONSTRUCTION)
    bad = [w for w in adversarial_weights if not (isinstance(w, (int, float)) and w > 0)]
    if bad:
        raise ValueError(f"adversarial weights must be positive numbers (leave the list empty for none), got {bad}")


def prune_generator(gan: GanSetup, *, keep_ratio, recipe: Recipe = RECIPE, epochs: int, checkpoint_dir: str | Path,
                    adversarial_weight: float = 0.0, resume: bool = True) -> PruningResult:
    """Prune the generator at ``keep_ratio`` for ``epochs`` with ``recipe`` against the original generator, plus the
    discriminator's loss times ``adversarial_weight`` when it is positive, fold it, and add
    :func:`distances` to the metrics."""
    loss_fn = AdversarialRegression(gan.discriminator, adversarial_weight) if adversarial_weight > 0 else None
    result = prune_and_fold(gan.generator, keep_ratio, gan.loaders, recipe=recipe, epochs=epochs, task=RECONSTRUCTION,
                            input_shape=gan.input_shape, checkpoint_dir=checkpoint_dir, resume=resume,
                            progress=gan.progress, loss_fn=loss_fn)
    result.metrics.update(distances(gan, result.folded))
    return result


@torch.inference_mode()
def sample_rows(gan: GanSetup, result: PruningResult, intermediate: int = 3) -> dict[str, torch.Tensor]:
    """Rows for a sample grid at the same latent codes: the original generator, then
    :func:`~pruning_utils.method.pipeline.stage_outputs` of the pruning run."""
    codes = gan.sample_codes.to(next(gan.generator.parameters()).device)
    return {"original": generate(gan.generator, codes), **stage_outputs(result, codes, intermediate)}
