"""The kinds of training run (kstyle.tasks): each config class names its kind, and each kind
builds its own trainer."""

import dataclasses

import pytest

from kstyle import tasks
from kstyle.config import RunOptions, StyleOptions, TrainConfig
from kstyle.distill_config import DistillConfig


def test_each_kind_of_run_has_a_trainer_builder_of_its_own():
    kinds = [TrainConfig.TASK, DistillConfig.TASK]
    assert len(set(kinds)) == len(kinds) and set(kinds) == set(tasks.TRAINER_BUILDERS)
    assert "TASK" not in {field.name for field in dataclasses.fields(TrainConfig)}


CONFIGS_BY_KIND = {"style": TrainConfig(style="s.png"), "distill": DistillConfig(teacher="runs/t")}


@pytest.mark.parametrize("config", CONFIGS_BY_KIND.values(), ids=CONFIGS_BY_KIND.keys())
def test_a_config_gets_the_trainer_of_its_kind(monkeypatch, config):
    built = []
    for kind in tasks.TRAINER_BUILDERS:
        monkeypatch.setitem(
            tasks.TRAINER_BUILDERS, kind, lambda given, kind=kind: built.append((kind, given))
        )
    tasks.build_task_trainer(config)
    assert built == [(config.TASK, config)]


def test_each_kind_reaches_its_own_trainer(monkeypatch):
    """The builders themselves, with the trainers' constructors recorded instead of run."""
    import kstyle.distill
    import kstyle.trainer

    built = []
    monkeypatch.setattr(kstyle.trainer, "build_trainer", lambda *a: built.append(("style", a)))
    monkeypatch.setattr(
        kstyle.distill, "build_distillation_trainer", lambda *a: built.append(("distill", a))
    )
    monkeypatch.setattr(tasks, "load_style_image", lambda path, size: (path, size))
    style, distill = CONFIGS_BY_KIND["style"], CONFIGS_BY_KIND["distill"]
    tasks.build_task_trainer(style)
    tasks.build_task_trainer(distill)
    assert built == [("style", (style, ("s.png", 256))), ("distill", (distill,))]


def test_only_style_runs_predate_an_option():
    """Style runs recorded before --arch trained the seed net; distillation always recorded it."""
    assert TrainConfig(style="s.png").options_of_older_runs() == {"arch": "johnson"}
    assert DistillConfig(teacher="runs/t").options_of_older_runs() == {}


def test_each_kind_declares_its_own_options_over_the_shared_ones():
    names = lambda config_class: [field.name for field in dataclasses.fields(config_class)]  # noqa: E731
    shared, style = names(RunOptions), names(StyleOptions)
    assert names(TrainConfig) == style + shared  # the style loss's options first in --help
    assert names(DistillConfig) == shared + ["teacher", "perceptual_weight"]
    assert "style" in style and "style" not in names(DistillConfig)
    with pytest.raises(TypeError, match="abstract"):
        RunOptions()  # abstract: every kind says where its output goes and what it reads
