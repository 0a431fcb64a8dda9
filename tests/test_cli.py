import pytest

from pruning_utils.config import PROFILES
from pruning_utils.harness import cli


def _args(*argv):
    return cli.with_profile_defaults(cli.parser().parse_args([*argv, "--out", "run.json"]))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_options_left_out_take_the_profile_and_the_ramp_a_quarter_of_its_pruning_epochs(name):
    profile, args = PROFILES[name], _args("--profile", name)
    assert (args.data, args.width, args.baseline_epochs, args.batch_size, args.baseline_lr) == (
        profile.classification_source, profile.vgg_width, profile.vgg_epochs, profile.batch_size, profile.lr)
    assert args.ramp_epochs == max(1, profile.prune_epochs // 4)
    assert args.ramp_epochs + args.final_epochs == profile.prune_epochs
    assert args.channels_last is None and args.bf16 is None  # decided by the device


def test_options_given_win_over_the_profile():
    args = _args("--profile", "full", "--width", "0.25", "--ramp-epochs", "3", "--no-bf16")
    assert args.width == 0.25 and args.ramp_epochs == 3 and args.bf16 is False
    assert args.final_epochs == PROFILES["full"].prune_epochs - 3


def test_unknown_profile_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--profile", "huge", "--out", "x.json"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
