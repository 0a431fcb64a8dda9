"""One source of settings: every default of the method is the Recipe's, and the seeds' recipe is a preset of it."""
import inspect
import json
import re

import nbformat
import pytest

import pruning_utils as pu
from pruning_utils.config import NOTEBOOKS_DIR, REPO_ROOT
from pruning_utils.engine.train import ResumeMismatchError
from pruning_utils.harness import cli
from pruning_utils.method import pipeline, pruning
from pruning_utils.studies import ablations, autoencoders, comparison

BEST = pu.Recipe()


def test_every_entry_point_defaults_to_the_best_recipe():
    assert pu.PruneConfig is pu.Recipe
    assert inspect.signature(pu.attach_branches).parameters["init"].default == BEST.init == "l1"
    assert BEST.for_task("classification").loss == "kd" and BEST.schedule == "linear"
    assert BEST.for_task("reconstruction").loss == "reconstruction"
    for protocol in (comparison.ComparisonConfig(), ablations.StudyConfig()):
        assert (protocol.lr, protocol.weight_decay) == (BEST.lr, BEST.weight_decay)
    assert comparison.ComparisonConfig().recipe == BEST
    args = cli.parser().parse_args(["--out", "x.json"])
    assert (args.lr, args.loss) == (BEST.lr, BEST.for_task("classification").loss)
    assert inspect.signature(pu.prune_and_fold).parameters["recipe"].default is None  # None: Recipe()
    assert autoencoders.RECIPE == BEST.with_changes(optimizer="adam", lr=1e-3, weight_decay=0.0)


def test_no_notebook_declares_a_default_of_its_own_for_a_recipe_setting():
    fields = {name.upper() for name in pu.Recipe.__dataclass_fields__} | {"PRUNE_LR", "LOSS", "INIT", "SCHEDULE"}
    for path in sorted(NOTEBOOKS_DIR.glob("0*.ipynb")):
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        for name, default in re.findall(r"^([A-Z_]+): [^=]+= ([^#\n]+)", cell.source, re.M):
            if name in fields:
                assert default.strip() == "None", f"{path.name}: {name} = {default.strip()} instead of the recipe's"


def test_the_seeds_recipe_is_a_preset():
    seeds = pu.Recipe.seeds()
    assert (seeds.init, seeds.schedule, seeds.stage_delta, seeds.loss, seeds.lr_schedule) == ("he", "step", 0.1, "ce",
                                                                                              "plateau")
    assert [s.start for s in seeds.schedule_for(10 + seeds.restart_epochs)][:3] == [0.9, 0.8, 0.7]
    assert pu.Recipe.seeds(lr=0.01).lr == 0.01


def test_schedules_of_every_kind_take_exactly_the_epochs():
    assert [(s.shape, s.epochs) for s in BEST.schedule_for(8)] == [("linear", 2), ("constant", 6)]
    assert [s.epochs for s in BEST.with_changes(schedule="cosine", ramp_epochs=3).schedule_for(8)] == [3, 5]
    assert [s.start for s in BEST.with_changes(schedule="step").schedule_for(8)] == [0.75, 0.5, 0.25, 0.0]
    explicit = BEST.with_changes(schedule="explicit", stage_alphas=(0.5, 0.0), epochs_per_stage=3)
    assert [(s.start, s.epochs) for s in explicit.schedule_for(6)] == [(0.5, 3), (0.0, 3)]
    with pytest.raises(ValueError, match="split evenly"):
        BEST.with_changes(schedule="exponential").schedule_for(4)
    with pytest.raises(ValueError, match="take 6 epochs, not the 5"):
        explicit.schedule_for(5)
    with pytest.raises(ValueError, match="restart_epochs"):
        BEST.with_changes(restarts=1).schedule_for(8)


def test_bad_settings_are_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown recipe settings \\['lossy'\\]"):
        BEST.with_changes(lossy="kd")
    with pytest.raises(ValueError, match="does not fit task 'reconstruction'"):
        BEST.with_changes(loss="kd").for_task("reconstruction")
    for bad in ({"init": "zeros"}, {"schedule": "random"}, {"lr": 0.0}, {"alpha_order": "sideways"}):
        with pytest.raises(ValueError):
            BEST.with_changes(**bad).validate()
    with pytest.raises(ValueError, match="task must be one of"):
        BEST.for_task("segmentation")


def test_the_stage_checkpoints_record_the_resolved_recipe(tmp_path):
    from test_pruning import SCHEDULE, _branched, _loaders

    train, val = _loaders()
    pu.prune(_branched(), train, val, SCHEDULE, checkpoint_dir=tmp_path, max_stages=1, progress=False)
    state = pruning.load_checkpoint(pruning.stage_checkpoints(tmp_path)[0])
    assert state["settings"]["recipe"]["loss"] == "kd" and state["settings"]["task"] == "classification"
    assert state["settings"]["schedule"] == [s.as_dict() for s in SCHEDULE]


def test_checkpoints_from_before_the_branch_kind_resume_and_another_kind_is_refused(tmp_path):
    from test_pruning import SCHEDULE, _branched, _loaders

    train, val = _loaders()
    pu.prune(_branched(), train, val, SCHEDULE, checkpoint_dir=tmp_path, max_stages=1, progress=False)
    state = pruning.load_checkpoint(pruning.stage_checkpoints(tmp_path)[0])
    assert "branch_kind" not in state["settings"]["recipe"]  # as the runs stored before it existed
    with pytest.raises(ResumeMismatchError, match="branch_kind"):
        pu.prune(_branched(), train, val, SCHEDULE, BEST.with_changes(branch_kind="projection"),
                 checkpoint_dir=tmp_path, progress=False)


def test_readme_example_runs_the_best_recipe_end_to_end(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    example = re.search(r"## Using the package.*?```python\n(.*?)```", readme, re.S)
    assert example, "README.md needs a '## Using the package' section with a python example"
    seen = {}
    real = pipeline.prune_and_fold

    def spy(*args, **kwargs):
        seen["recipe"] = kwargs.get("recipe")
        result = real(*args, **kwargs)
        seen["metrics"] = result.metrics
        return result

    monkeypatch.setattr(pu, "prune_and_fold", spy)
    monkeypatch.chdir(tmp_path)  # the example's paths come from the package, not the working directory
    exec(compile(example.group(1), "README.md", "exec"), {})
    assert seen["recipe"] in (None, BEST) and seen["metrics"]["fold_relative_max_difference"] <= 1e-5
    assert json.dumps(seen["metrics"])
