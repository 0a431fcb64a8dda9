"""The DCGAN: its networks, adversarial training that resumes, latent-code batches, the Fréchet distance and the
pruning of the generator against the original generator."""
import numpy as np
import pytest
import torch

import pruning_utils as pu
from pruning_utils.engine import models
from pruning_utils.engine.data import BatchLoader
from pruning_utils.engine.gan import LatentLoader, train_gan
from pruning_utils.engine.sizes import count_parameters
from pruning_utils.engine.train import ResumeMismatchError
from pruning_utils.studies import gan

LATENT = 8


def tiny_gan(seed=0):
    torch.manual_seed(seed)
    return models.dcgan_generator(LATENT, width=0.0625), models.dcgan_discriminator(width=0.0625)


def real_loader(count=32, batch_size=8):
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return BatchLoader(images, None, batch_size, shuffle=True, seed=0)


def test_dcgan_networks_map_codes_to_images_and_images_to_logits():
    generator, discriminator = models.dcgan_generator(100), models.dcgan_discriminator()
    images = generator(torch.randn(2, 100, 1, 1))
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert discriminator(images).shape == (2, 1)
    convolutions = 16 * (100 * 256 + 256 * 128 + 128 * 64 + 64 * 3)  # 4x4 kernels, no biases
    assert count_parameters(generator) == convolutions + 2 * (256 + 128 + 64)  # + BatchNorm scales and shifts
    with pytest.raises(ValueError, match="latent_dim"):
        models.dcgan_generator(0)


def test_generator_is_a_chain_of_three_prunable_units():
    plan = pu.branch_plan(models.dcgan_generator(LATENT, width=0.25), 0.5)
    assert [(e["kind"], e["kept"]) for e in plan] == [("learned E", 32), ("learned E", 16), ("learned E", 8),
                                                       ("left alone", 3)]


def test_latent_loader_draws_fresh_or_fixed_codes_and_the_teachers_images():
    teacher = models.dcgan_generator(LATENT, width=0.0625).eval()
    fixed = LatentLoader(LATENT, 20, 8, teacher=teacher, seed=3)
    first, second = list(fixed), list(fixed)
    assert len(fixed) == 3 and [len(z) for z, _ in first] == [8, 8, 4]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    with torch.no_grad():
        assert torch.allclose(first[0][1], teacher(first[0][0]))
    fresh = LatentLoader(LATENT, 20, 8, fresh=True, seed=3)
    state = fresh.state_dict()
    one, two = next(iter(fresh))[0], next(iter(fresh))[0]
    assert not torch.equal(one, two) and next(iter(fresh))[1] is None
    fresh.load_state_dict(state)
    assert torch.equal(next(iter(fresh))[0], one)  # the draws resume


def test_latent_loader_leaves_the_teacher_trainable():
    teacher = models.dcgan_generator(LATENT, width=0.0625)
    LatentLoader(LATENT, 4, 4, teacher=teacher)
    assert all(p.requires_grad for p in teacher.parameters())


def test_gan_training_resumes_to_the_same_weights(tmp_path):
    generator, discriminator = tiny_gan()
    history = train_gan(generator, discriminator, real_loader(), latent_dim=LATENT, epochs=2, progress=False)
    assert len(history) == 2 and all(0 < h["d_real"] < 1 and h["d_loss"] > 0 for h in history)
    checkpoint = tmp_path / "gan.pt"
    resumed_g, resumed_d = tiny_gan()
    train_gan(resumed_g, resumed_d, real_loader(), latent_dim=LATENT, epochs=2, checkpoint=checkpoint, progress=False)
    again_g, again_d = tiny_gan(seed=5)  # other initial weights: everything must come from the checkpoint
    again = train_gan(again_g, again_d, real_loader(), latent_dim=LATENT, epochs=2, checkpoint=checkpoint,
                      progress=False)
    assert [h["g_loss"] for h in again] == [h["g_loss"] for h in history]
    for a, b in zip(again_g.state_dict().values(), generator.state_dict().values()):
        assert torch.allclose(a.float(), b.float())
    with pytest.raises(ResumeMismatchError, match="lr"):
        train_gan(*tiny_gan(), real_loader(), latent_dim=LATENT, epochs=2, lr=1e-3, checkpoint=checkpoint,
                  progress=False)


def test_interrupted_gan_training_continues_where_it_stopped(tmp_path):
    generator, discriminator = tiny_gan()
    straight = train_gan(generator, discriminator, real_loader(), latent_dim=LATENT, epochs=2, progress=False)
    checkpoint = tmp_path / "gan.pt"
    first_g, first_d = tiny_gan()
    train_gan(first_g, first_d, real_loader(), latent_dim=LATENT, epochs=1, checkpoint=checkpoint, progress=False)
    state = torch.load(checkpoint, weights_only=True)
    state["settings"]["epochs"] = 2  # as if the two-epoch run had stopped after its first epoch
    torch.save(state, checkpoint)
    later_g, later_d = tiny_gan(seed=5)
    resumed = train_gan(later_g, later_d, real_loader(), latent_dim=LATENT, epochs=2, checkpoint=checkpoint,
                        progress=False)
    assert [h["d_loss"] for h in resumed] == pytest.approx([h["d_loss"] for h in straight])


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) * 2 + 1
    # |mu|^2 = 4; tr(I + 4I - 2 * 2I) = 4
    assert gan.frechet_distance(a, b) == pytest.approx(8.0, rel=0.03)
    assert gan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    constant = np.concatenate([a, np.zeros((len(a), 1))], 1)  # a feature that never varies
    assert np.isfinite(gan.frechet_distance(constant, constant + 1))
    with pytest.raises(ValueError, match="equal dimension"):
        gan.frechet_distance(a, b[:, :3])


def test_adversarial_regression_adds_the_discriminators_loss_and_trains_the_generator_only():
    generator, discriminator = tiny_gan()
    z = torch.randn(4, LATENT, 1, 1)
    target = torch.rand(4, 3, 32, 32)
    plain, _ = gan.AdversarialRegression(discriminator, 0.0)(generator, z, target)
    assert plain.item() == pytest.approx(torch.nn.functional.mse_loss(generator(z), target).item())
    loss, _ = gan.AdversarialRegression(discriminator, 1.0)(generator, z, target)
    assert loss.item() > plain.item()
    loss.backward()
    assert all(p.grad is None for p in discriminator.parameters()) and not discriminator.training
    assert next(generator.parameters()).grad is not None
    assert repr(gan.AdversarialRegression(discriminator, 0.5)) == "AdversarialRegression(weight=0.5)"
    with pytest.raises(ValueError, match="non-negative"):
        gan.AdversarialRegression(discriminator, -1.0)


def test_pruned_generator_folds_and_a_resume_with_another_loss_is_refused(tmp_path):
    generator, discriminator = tiny_gan()
    codes = dict(latent_dim=LATENT, batch_size=16, teacher=generator)
    loaders = (LatentLoader(count=64, fresh=True, **codes), LatentLoader(count=32, seed=1, **codes),
               LatentLoader(count=32, seed=2, **codes))
    run = dict(recipe=gan.RECIPE, epochs=2, task="reconstruction", input_shape=(LATENT, 1, 1),
               checkpoint_dir=tmp_path, progress=False)
    result = pu.prune_and_fold(generator, 0.5, loaders, **run)
    assert result.metrics["fold_relative_max_difference"] < 1e-5
    assert result.metrics["params"] < count_parameters(generator) and result.metrics["test_psnr"] > 10
    with pytest.raises(ResumeMismatchError, match="loss_fn"):
        pu.prune_and_fold(generator, 0.5, loaders, **run, loss_fn=gan.AdversarialRegression(discriminator, 0.1))


@pytest.mark.parametrize("changes, message", [({"keep_ratio": 1.5}, "keep ratio"),
                                              ({"adversarial_weights": [-0.1]}, "adversarial weights"),
                                              ({"epochs": 0}, "epochs")])
def test_bad_pruning_settings_are_refused_before_the_gan_trains(changes, message):
    settings = {"keep_ratio": 0.5, "recipe": gan.RECIPE.for_task("reconstruction"), "epochs": 4,
                "adversarial_weights": [0.001], **changes}
    with pytest.raises(ValueError, match=message):
        gan.check_settings(**settings)
