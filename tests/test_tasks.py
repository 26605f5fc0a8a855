"""The kinds of training run (kstyle.tasks): each config class names its kind, and each kind
builds its own trainer."""

import dataclasses

import numpy as np
import pytest

from kstyle import tasks
from kstyle.add_style_config import AddStyleConfig
from kstyle.config import RunOptions, StyleOptions, TrainConfig
from kstyle.distill_config import DistillConfig


def test_each_kind_of_run_has_a_trainer_builder_of_its_own():
    kinds = [TrainConfig.TASK, AddStyleConfig.TASK, DistillConfig.TASK]
    assert len(set(kinds)) == len(kinds) and set(kinds) == set(tasks.TRAINER_BUILDERS)
    assert "TASK" not in {field.name for field in dataclasses.fields(TrainConfig)}


CONFIGS_BY_KIND = {
    "style": TrainConfig(style="s.png"),
    "add-style": AddStyleConfig(add_style="c.png", from_run="runs/base"),
    "distill": DistillConfig(teacher="runs/t"),
}


@pytest.mark.parametrize("config", CONFIGS_BY_KIND.values(), ids=CONFIGS_BY_KIND.keys())
def test_a_config_gets_the_trainer_of_its_kind(monkeypatch, config):
    built = []
    for kind in tasks.TRAINER_BUILDERS:
        monkeypatch.setitem(
            tasks.TRAINER_BUILDERS, kind, lambda given, kind=kind: built.append((kind, given))
        )
    tasks.build_task_trainer(config)
    assert built == [(config.TASK, config)]


def test_each_kind_reaches_its_own_trainer(monkeypatch, tmp_path):
    """The builders themselves, with the trainers' constructors recorded instead of run: one
    style builds the seed's trainer, several the multi-style one, --add-style its own."""
    import kstyle.distill
    import kstyle.multi_style
    import kstyle.trainer

    built = []
    record = lambda kind: lambda *a: built.append((kind, a))  # noqa: E731
    monkeypatch.setattr(kstyle.trainer, "build_trainer", record("style"))
    monkeypatch.setattr(kstyle.multi_style, "build_multi_style_trainer", record("styles"))
    monkeypatch.setattr(kstyle.multi_style, "build_add_style_trainer", record("add"))
    monkeypatch.setattr(kstyle.distill, "build_distillation_trainer", record("distill"))
    monkeypatch.setattr(tasks, "load_style_image", lambda path, size: np.full((1,), size))
    folder = tmp_path / "styles"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(b"")
    one, several = TrainConfig(style="s.png"), TrainConfig(style=[str(folder), "s.png"])
    adding, distill = CONFIGS_BY_KIND["add-style"], CONFIGS_BY_KIND["distill"]
    for config in (one, several, adding, distill):
        tasks.build_task_trainer(config)
    assert [kind for kind, _ in built] == ["style", "styles", "add", "distill"]
    assert built[0][1][0] is one and built[0][1][1].tolist() == [256]
    _, (config, images, names) = built[1]
    assert config is several and images.shape == (3, 1) and names == ["a", "b", "s"]
    assert built[2][1][0] is adding and built[3][1] == (distill,)


def test_what_older_runs_had_of_later_options():
    """Style runs recorded before --arch trained the seed net (distillation always recorded
    it); no run recorded before --stability-weight had the term, no distillation before
    --texture-weight its term."""
    assert TrainConfig(style="s.png").options_of_older_runs() == {
        "stability_weight": 0.0, "arch": "johnson"
    }  # fmt: skip
    assert DistillConfig(teacher="runs/t").options_of_older_runs() == {
        "stability_weight": 0.0, "texture_weight": 0.0
    }  # fmt: skip


def test_each_kind_declares_its_own_options_over_the_shared_ones():
    names = lambda config_class: [field.name for field in dataclasses.fields(config_class)]  # noqa: E731
    shared, style = names(RunOptions), names(StyleOptions)
    assert names(TrainConfig) == style + shared  # the style loss's options first in --help
    assert names(DistillConfig) == shared + [
        "teacher",
        "teacher_range",
        "teacher_input",
        "perceptual_weight",
        "texture_weight",
    ]
    assert "style" in style and "style" not in names(DistillConfig)
    with pytest.raises(TypeError, match="abstract"):
        RunOptions()  # abstract: every kind says where its output goes and what it reads
