import pytest

from pruning_utils.method.branches import get_alpha
from pruning_utils.studies import train_speed


def test_options_are_measured_against_the_plain_loop_in_the_same_run(tmp_path):
    rows = train_speed.measure(["channels_last", "bf16"], width=0.0625, batch_size=4, steps=2, repeats=2, warmup=1)
    assert [r["option"] for r in rows] == ["plain", "channels_last", "bf16"]
    assert rows[0]["train_ratio"] == rows[0]["eval_ratio"] == 1.0
    for row in rows:
        assert row["min_train_images_per_s"] <= row["train_images_per_s"] <= row["max_train_images_per_s"]
        assert row["train_ratio"] == pytest.approx(row["train_images_per_s"] / rows[0]["train_images_per_s"])
    assert rows[1]["channels_last"] and rows[2]["bf16"] and not rows[2]["compile"]


def test_command_line_writes_its_json_and_rejects_bad_settings(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert train_speed.main(["--options", "plain", "--width", "0.0625", "--batch-size", "2", "--steps", "1",
                             "--repeats", "1", "--out", str(out)]) == 0
    assert '"option": "plain"' in out.read_text() and "train_ratio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_speed.main(["--steps", "0", "--out", str(out)])


def test_moving_alpha_sets_a_new_alpha_between_the_paths_before_every_step():
    model = train_speed.mixed_vgg(width=0.0625)
    move, seen = train_speed.alpha_mover(model), set()
    for _ in range(5):
        move()
        alpha = get_alpha(model)
        assert 0.05 <= alpha <= 0.95
        seen.add(alpha)
    assert len(seen) == 5
    rows = train_speed.measure(["plain"], width=0.0625, batch_size=4, steps=2, repeats=1, warmup=1, moving_alpha=True)
    assert rows[0]["train_images_per_s"] > 0


def test_references_time_the_original_the_paths_apart_and_the_projection_in_the_same_rounds():
    rows = train_speed.measure(["plain"], width=0.0625, batch_size=4, steps=2, repeats=1, warmup=1, moving_alpha=True,
                               references=True)
    assert [r["option"] for r in rows] == ["plain", "plain_apart", "plain_projection", "original"]
    assert rows[-1]["time_vs_original"] == rows[-1]["mac_ratio"] == 1.0
    assert rows[0]["macs"] == rows[1]["macs"] > rows[2]["macs"] > rows[3]["macs"]  # a 1x1 P costs less than k filters
    assert all(r["time_vs_original"] > 0 for r in rows)
