import pytest

from pruning_utils.method import schedules as S


def test_step_schedule():
    assert S.step_values(0.25) == [0.75, 0.5, 0.25, 0.0]
    assert S.step_values(0.1) == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert S.step_values(0.3) == pytest.approx([0.7, 0.4, 0.1, 0.0])


def test_exponential_schedule_floors_to_zero():
    values = S.exponential_values(0.3, floor=0.1)
    assert values[0] == pytest.approx(0.7408, abs=1e-4) and values[-1] == 0.0
    assert all(v >= 0.1 for v in values[:-1]) and len(values) == 8  # exp(-0.3 * 7) = 0.122, exp(-2.4) = 0.09


def test_multiplicative_and_explicit():
    assert S.multiplicative_values(0.5, floor=0.1) == [0.5, 0.25, 0.125, 0.0]
    assert S.explicit_values([0.5, 0.2, 0.1]) == [0.5, 0.2, 0.1, 0.0]
    with pytest.raises(ValueError, match="increase"):
        S.explicit_values([0.2, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.explicit_values([1.5])


def test_ramps_move_alpha_every_step_then_hold_zero():
    ramp, final = S.ramp("linear", 4, 2)
    assert [ramp.alpha_at(f) for f in (0, 0.25, 1)] == [1.0, 0.75, 0.0]
    cosine = S.ramp("cosine", 2, 1)[0]
    assert cosine.alpha_at(0.5) == pytest.approx(0.5) and cosine.alpha_at(0.25) > 0.75
    assert final.start == final.end == 0.0 and final.epochs == 2


def test_make_schedule_and_errors():
    schedule = S.make_schedule("step", 2, delta=0.25)
    assert [s.start for s in schedule] == [0.75, 0.5, 0.25, 0.0] and S.total_epochs(schedule) == 8
    assert S.total_epochs(S.make_schedule("linear", ramp_epochs=2, final_epochs=6)) == 8
    with pytest.raises(ValueError, match="kind"):
        S.make_schedule("sawtooth")
    with pytest.raises(ValueError, match="delta"):
        S.step_values(0)
    with pytest.raises(ValueError, match="needs `values`"):
        S.make_schedule("explicit")
    with pytest.raises(ValueError, match="at least one epoch"):
        S.Stage(0.5, 0.5, 0)


def test_the_recipe_fills_a_ramp_from_the_epochs():
    from pruning_utils import Recipe

    ramp = Recipe().schedule_for(8)
    assert [(s.epochs, s.shape) for s in ramp] == [(2, "linear"), (6, "constant")]
    assert [s.epochs for s in Recipe(schedule="cosine").schedule_for(4)] == [1, 3]
    assert [s.epochs for s in Recipe(ramp_epochs=5).schedule_for(40)] == [5, 35]
    assert [s.epochs for s in Recipe(schedule="step", stage_delta=0.25).schedule_for(8)] == [2, 2, 2, 2]
