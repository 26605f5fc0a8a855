"""The kinds of training run, each with its own trainer.

A run's options are a config class per kind: :class:`kstyle.config.TrainConfig` for style
training (one style or N), :class:`kstyle.add_style_config.AddStyleConfig` for adding styles
to a trained net, :class:`kstyle.distill_config.DistillConfig` for distillation. Each class
names its kind in ``TASK``, and the kind's entry in :data:`TRAINER_BUILDERS` builds its
trainer, so that :mod:`kstyle.run` drives every kind the same way and never asks which one it
holds.
"""

import numpy as np

from kstyle.add_style_config import ADD_STYLE_TASK, AddStyleConfig
from kstyle.config import STYLE_TASK, RunOptions, TrainConfig
from kstyle.distill_config import DISTILL_TASK


def load_style_image(path: str, size: int) -> np.ndarray:
    """The style image as (size, size, 3) float32 RGB in [0, 255], resized like the content."""
    import tensorflow as tf

    from kstyle.data import decode_and_resize
    from kstyle.images import load_image

    image = load_image(path)
    encoded = tf.io.encode_png(image)
    return decode_and_resize(encoded, size).numpy()


def _style_trainer(config: TrainConfig):
    """One style: the seed's trainer, unchanged; N styles: one net of N styles."""
    size = config.resolved_style_size()
    images = [load_style_image(path, size) for path in config.style_files()]
    if len(images) == 1:
        from kstyle.trainer import build_trainer

        return build_trainer(config, images[0])
    from kstyle.multi_style import build_multi_style_trainer

    return build_multi_style_trainer(config, np.stack(images), config.style_names())


def _add_style_trainer(config: AddStyleConfig):
    """The base run's net with the new styles' rows, only those learning."""
    from kstyle.multi_style import build_add_style_trainer

    size = config.resolved_style_size()
    images = [load_style_image(path, size) for path in config.style_files()]
    return build_add_style_trainer(config, np.stack(images))


def _distillation_trainer(config):
    from kstyle.distill import build_distillation_trainer

    return build_distillation_trainer(config)


# Each kind's builder: config -> (the compiled trainer, its optimizer).
TRAINER_BUILDERS = {
    STYLE_TASK: _style_trainer,
    ADD_STYLE_TASK: _add_style_trainer,
    DISTILL_TASK: _distillation_trainer,
}


def build_task_trainer(config: RunOptions):
    """The compiled trainer of ``config``'s kind of training, and its optimizer."""
    return TRAINER_BUILDERS[config.TASK](config)
