"""Distillation: train a small student transform net to reproduce a trained teacher's outputs.

``kstyle.run.train(kstyle.distill_config.DistillConfig(teacher=..., data=..., output=...))`` runs it
like style training (the same data pipeline, checkpoints, resume, NaN guard, curves and run
directory; ``kstyle distill`` on the command line). The teacher (a run directory or a
``.keras`` file) is loaded with :func:`kstyle.transform_net.load_transform_net`, frozen and
never written; the run records its path and the SHA-256 of its model file, and refuses to
resume with another one.

The loss (:class:`DistillationTrainer`), for content images X, student S(X), teacher T(X),
all (B, H, W, 3) RGB in [0, 255]:

* ``pixel`` = mean over the B·H·W·3 values of ((S(X) − T(X)) / 255)², the mean squared error
  of the pictures scaled to [0, 1] (0: identical; 1: black against white everywhere).
* ``perceptual`` (only with ``--perceptual-weight`` w_p > 0, which needs the VGG-16 weights)
  = w_p · mean over all elements of (φ(S(X)) − φ(T(X)))², φ the loss net's relu3_3
  activations: the reference's content (feature reconstruction) loss, with the teacher's
  output as the target.
* ``loss`` = pixel + perceptual.

With ``--perceptual-weight 0`` (the default) no VGG is built: a student can be distilled
wherever its teacher runs.
"""

from keras import ops

from kstyle.constants import IMAGE_SIZE
from kstyle.distill_config import DistillConfig, load_teacher
from kstyle.loss_net import CONTENT_LAYER
from kstyle.losses import content_loss
from kstyle.trainer import TransformNetTrainer, _replica_copy, compile_trainer


def pixel_loss(student, teacher):
    """Mean over all elements of ((student − teacher) / 255)² for (B, H, W, 3) pictures in
    [0, 255]: the mean squared error of the pictures scaled to [0, 1] (a float32 scalar)."""
    difference = (ops.cast(student, "float32") - ops.cast(teacher, "float32")) / 255.0
    return ops.mean(ops.square(difference))


class DistillationTrainer(TransformNetTrainer):
    """Trains ``transform_net`` (the student) to reproduce ``teacher``'s outputs.

    Args:
        transform_net: the student (see ``build_transform_net``).
        teacher: the trained transform net, frozen here; never trained or written.
        loss_net: the frozen loss network for the perceptual term (None: pixel loss only).
        perceptual_weight: w_p of the module docstring's perceptual term.
        image_size: the training image size, for the preview variables.

    It reports ``pixel``, ``perceptual`` (0 without a loss net) and their sum ``loss``; its
    preview is input | teacher | student. The step, NaN guard, distribution and loss scaling
    are :class:`TransformNetTrainer`'s.
    """

    loss_names = ("loss", "pixel", "perceptual")

    def __init__(
        self,
        transform_net,
        teacher,
        loss_net=None,
        perceptual_weight=0.0,
        content_layer=CONTENT_LAYER,
        image_size=IMAGE_SIZE,
        **kwargs,
    ):
        super().__init__(transform_net, image_size=image_size, **kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.loss_net = loss_net
        if loss_net is not None:
            loss_net.trainable = False
        self.perceptual_weight = float(perceptual_weight)
        self.content_layer = content_layer
        self.plotted = ("pixel", "perceptual", "loss") if loss_net is not None else ("loss",)
        self.preview_teacher = _replica_copy((image_size, image_size, 3), "preview_teacher")

    def teach(self, content_batch):
        """The teacher's outputs for ``content_batch``, float32, outside the gradient."""
        return ops.stop_gradient(ops.cast(self.teacher(content_batch, training=False), "float32"))

    def compute_losses(self, content_batch, outputs, styles=None):
        """``(total, {"pixel": ..., "perceptual": ...})`` for a content batch and the
        student's outputs (the module docstring's losses)."""
        target = self.teach(content_batch)
        pixel = pixel_loss(outputs, target)
        perceptual = ops.zeros((), "float32")
        if self.loss_net is not None:
            student = self.loss_net(outputs, training=False)[self.content_layer]
            teacher = self.loss_net(target, training=False)[self.content_layer]
            perceptual = self.perceptual_weight * content_loss(student, teacher)
        return pixel + perceptual, {"pixel": pixel, "perceptual": perceptual}

    def record_preview(self, content, outputs):
        """Keeps the input, the student's output and the teacher's, for the preview."""
        super().record_preview(content, outputs)
        self.preview_teacher.assign(self.teach(content)[0])

    def preview_panels(self):
        """Input | teacher | student."""
        return (self.preview_input, self.preview_teacher, self.preview_output)


def build_student(config: DistillConfig):
    """The untrained student transform net of ``config`` (its architecture and padding)."""
    from kstyle.transform_net import build_transform_net

    return build_transform_net(config.arch, padding=config.padding)


def build_distillation_trainer(config: DistillConfig):
    """The compiled :class:`DistillationTrainer` of ``config`` and its (built) optimizer, like
    ``kstyle.trainer.build_trainer``: call it inside the strategy's scope. The student is
    built with ``config.mixed_precision``'s dtype policy; the teacher keeps its own."""
    from kstyle.distribute import dtype_policy
    from kstyle.loss_net import build_loss_net

    teacher = load_teacher(config.teacher)
    with dtype_policy(config.mixed_precision):
        trainer = DistillationTrainer(
            build_student(config),
            teacher,
            build_loss_net(config.vgg_weights) if config.uses_loss_net() else None,
            perceptual_weight=config.perceptual_weight,
            image_size=config.image_size,
        )
        return trainer, compile_trainer(trainer, config)
