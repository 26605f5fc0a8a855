"""The kinds of training run (kstyle.tasks): each config class names its kind, and each kind
builds its own trainer."""

import dataclasses

import pytest

from kstyle import tasks
from kstyle.config import DistillConfig, TrainConfig


def test_each_kind_of_run_has_a_trainer_builder_of_its_own():
    kinds = [TrainConfig.TASK, DistillConfig.TASK]
    assert len(set(kinds)) == len(kinds) and set(kinds) == set(tasks.TRAINER_BUILDERS)
    assert "TASK" not in {field.name for field in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize(
    "config",
    [TrainConfig(style="s.png"), DistillConfig(teacher="runs/t")],
    ids=["style", "distill"],
)
def test_a_config_gets_the_trainer_of_its_kind(monkeypatch, config):
    built = []
    for kind in tasks.TRAINER_BUILDERS:
        monkeypatch.setitem(
            tasks.TRAINER_BUILDERS, kind, lambda given, kind=kind: built.append((kind, given))
        )
    tasks.build_task_trainer(config)
    assert built == [(config.TASK, config)]


def test_only_style_runs_predate_an_option():
    """Style runs recorded before --arch trained the seed net; distillation always recorded it."""
    assert TrainConfig(style="s.png").options_of_older_runs() == {"arch": "johnson"}
    assert DistillConfig(teacher="runs/t").options_of_older_runs() == {}
