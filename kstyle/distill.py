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
* ``texture`` (only with ``--texture-weight`` w_t > 0, which needs the VGG-16 weights) = w_t
  · Σ over the style layers l (relu1_2, relu2_2, relu3_3, relu4_3) of (1/B) Σ over images
  Σ over all C_l × C_l entries (G(φ_l(S(X))) − G(φ_l(T(X))))², G the Gram matrix divided by
  C_l·H_l·W_l: the reference's style loss, with each image's own teacher picture as its
  target (:func:`kstyle.losses.style_loss` with per-image targets). A pixel loss asks for
  the mean of strokes whose exact place cannot be predicted, and averages them away; the
  Gram matrices ask only for their statistics.
* ``loss`` = pixel + perceptual (+ texture).

With ``--perceptual-weight 0`` (the default) no VGG is built: a student can be distilled
wherever its teacher runs.

A teacher of N styles (:mod:`kstyle.norms`) gives a student of N styles
(:class:`MultiStyleDistillationTrainer`): each training image gets a style vector w, one
style alone half the time and a blend of two otherwise (:func:`drawn_style_vectors`), and
the loss compares S(X, w) with T(X, w).
"""

import keras
import tensorflow as tf
from keras import ops

from kstyle.constants import IMAGE_SIZE
from kstyle.distill_config import DistillConfig, load_teacher
from kstyle.loss_net import CONTENT_LAYER, STYLE_LAYERS
from kstyle.losses import content_loss, gram_matrix, picture_mse, style_loss
from kstyle.teacher_files import teacher_format
from kstyle.trainer import TransformNetTrainer, _replica_copy, compile_trainer


def pixel_loss(student, teacher):
    """Mean over all elements of ((student − teacher) / 255)² for (B, H, W, 3) pictures in
    [0, 255]: the mean squared error of the pictures scaled to [0, 1] (a float32 scalar)."""
    return picture_mse(student, teacher)


def texture_loss(student_features, teacher_features):
    """The texture term before its weight (the module docstring's): the style loss between
    the Gram matrices of ``student_features`` and ``teacher_features`` (``{style layer: (B, h,
    w, c)}`` activations of the two batches of pictures), image by image; a float32 scalar."""
    grams = {layer: gram_matrix(student_features[layer]) for layer in STYLE_LAYERS}
    targets = {layer: gram_matrix(teacher_features[layer]) for layer in STYLE_LAYERS}
    return style_loss(grams, targets)[0]


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
        texture_weight=0.0,
        **kwargs,
    ):
        texture = ("texture",) if texture_weight else ()
        super().__init__(transform_net, image_size=image_size, extra_losses=texture, **kwargs)
        self.texture_weight = float(texture_weight)
        self.teacher = teacher
        self.teacher.trainable = False
        self.loss_net = loss_net
        if loss_net is not None:
            loss_net.trainable = False
        self.perceptual_weight = float(perceptual_weight)
        self.content_layer = content_layer
        self.plotted = ("loss",) if loss_net is None else ("pixel", *self.loss_names[2:], "loss")
        self.preview_teacher = _replica_copy((image_size, image_size, 3), "preview_teacher")

    def teach(self, content_batch, styles=None):
        """The teacher's outputs for ``content_batch``, float32, outside the gradient (a net of
        one style has no ``styles``)."""
        return ops.stop_gradient(ops.cast(self.teacher(content_batch, training=False), "float32"))

    def compute_losses(self, content_batch, outputs, styles=None):
        """``(total, {"pixel": ..., "perceptual": ...})`` for a content batch and the
        student's outputs (the module docstring's losses)."""
        target = self.teach(content_batch, styles)
        pixel = pixel_loss(outputs, target)
        perceptual = ops.zeros((), "float32")
        parts = {"pixel": pixel}
        if self.loss_net is not None:
            student = self.loss_net(outputs, training=False)
            teacher = self.loss_net(target, training=False)
            layer = self.content_layer
            perceptual = self.perceptual_weight * content_loss(student[layer], teacher[layer])
            if self.texture_weight:
                parts["texture"] = self.texture_weight * texture_loss(student, teacher)
        parts["perceptual"] = perceptual
        return sum(parts.values()), parts

    def record_preview(self, content, outputs):
        """Keeps the input, the student's output and the teacher's, for the preview."""
        super().record_preview(content, outputs)
        self.preview_teacher.assign(self.teach(content)[0])

    def preview_panels(self):
        """Input | teacher | student."""
        return (self.preview_input, self.preview_teacher, self.preview_output)


class FileTeacherDistillationTrainer(DistillationTrainer):
    """:class:`DistillationTrainer` for a teacher in an exported format
    (:class:`kstyle.teacher_files.FileTeacher`): the teacher runs ahead of the steps, off the
    training step's thread (:class:`kstyle.teacher_feed.TeacherFeed`), and each batch reaches
    the step with its teacher's pictures, which :meth:`split_batch` gives in the place of
    styles."""

    def __init__(self, transform_net, teacher, **kwargs):
        super().__init__(transform_net, teacher, **kwargs)
        self.feeds = []
        teacher.seconds, teacher.calls = 0.0, 0  # this run's share

    def label_stream(self, dataset, start_step: int, seed: int, per_step: int = 1, pipeline=(0, 1)):
        """Pairs each batch of images with the teacher's pictures of it, ``(images, pictures)``
        (float32, (B, H, W, 3) in [0, 255]), computed ahead of the step that takes them by a
        feed that :meth:`fit` closes when it returns."""
        from kstyle.teacher_feed import TeacherFeed

        feed = TeacherFeed(self.teacher, dataset)
        self.feeds.append(feed)
        return feed.dataset()

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, then closes the feeds of its streams; raises the teacher's
        error when it failed during the call (its stream then ended the call)."""
        try:
            history = super().fit(*args, **kwargs)
        except Exception as error:  # a failed teacher ends the stream: report the cause
            failure = self.close_feeds()
            if failure is not None:
                raise failure from error
            raise
        except BaseException:  # KeyboardInterrupt: stop the feed's thread too
            self.close_feeds()
            raise
        failure = self.close_feeds()
        if failure is not None:
            raise failure
        return history

    def close_feeds(self):
        """Closes the feeds that :meth:`label_stream` started; returns the error of the
        first teacher that failed, or None."""
        feeds, self.feeds = self.feeds, []
        failures = [feed.close() for feed in feeds]
        return next((failure for failure in failures if failure is not None), None)

    def split_batch(self, data):
        """``(images, the teacher's pictures of them)`` from a labelled batch."""
        return data[0], data[1]

    def teach(self, content_batch, styles=None):
        """The teacher's pictures, which the stream carries in the place of ``styles``."""
        return ops.stop_gradient(ops.cast(styles, "float32"))

    def record_styles(self, styles):
        """Keeps the first teacher picture for the preview (the step's ``styles``)."""
        if styles.shape[1:] == self.preview_teacher.shape:
            self.preview_teacher.assign(styles[0])

    def record_preview(self, content, outputs):
        """Keeps the input and the student's output (:meth:`record_styles` the teacher's)."""
        TransformNetTrainer.record_preview(self, content, outputs)

    def summary_fields(self, fit_seconds: float) -> dict:
        """``teacher_seconds``: the time the teacher ran in this process's input pipeline,
        and ``teacher_share``: that over ``fit_seconds``, the time ``fit`` took (the teacher
        runs ahead of the step, so a share well under 1 costs the step little)."""
        seconds = self.teacher.seconds
        return {
            "teacher_seconds": round(seconds, 3),
            "teacher_share": round(seconds / fit_seconds, 4) if fit_seconds > 0 else None,
        }


def drawn_style_vectors(positions, num_styles: int, seed: int):
    """The style vectors (B, N) float32 of the training images at ``positions`` (B,) int64
    of the stream, as :data:`kstyle.constants.DISTILL_STYLE_RULE` says: from four uniform
    numbers u per image (stateless, seeded by the data ``seed`` and the position), styles
    i = floor(u0 N) and j = floor(u1 N), a = 0 when u2 < 0.5 (style i alone) else u3, and
    w = (1 − a) e_i + a e_j."""

    def one(position):
        seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])
        return tf.random.stateless_uniform([4], seed=seeds)

    draws = tf.map_fn(one, positions, fn_output_signature=tf.float32)
    count = tf.cast(num_styles, tf.float32)
    first = tf.minimum(tf.cast(tf.floor(draws[:, 0] * count), tf.int32), num_styles - 1)
    second = tf.minimum(tf.cast(tf.floor(draws[:, 1] * count), tf.int32), num_styles - 1)
    amount = tf.where(draws[:, 2] < 0.5, 0.0, draws[:, 3])[:, None]
    return (1.0 - amount) * tf.one_hot(first, num_styles) + amount * tf.one_hot(second, num_styles)


class MultiStyleDistillationTrainer(DistillationTrainer):
    """:class:`DistillationTrainer` for a teacher and a student of N styles: each image of
    the stream carries its style vector (:meth:`label_stream`), and both nets stylize it with
    that vector. The preview is a row per style: input | teacher | student."""

    def __init__(self, transform_net, teacher, num_styles: int, **kwargs):
        super().__init__(transform_net, teacher, **kwargs)
        self.num_styles = int(num_styles)
        self.preview_vector = tf.Variable(
            tf.one_hot(0, self.num_styles), trainable=False, name="preview_vector"
        )

    def label_stream(self, dataset, start_step: int, seed: int, per_step: int = 1, pipeline=(0, 1)):
        """Pairs each batch of the stream that starts at ``start_step`` with its images' style
        vectors ``(images, vectors (B, N))``, drawn by their places in the whole run's stream
        (:func:`drawn_style_vectors`): step s's batches come from each pipeline ``(index,
        count)`` in turn, ``per_step`` each. A resumed run draws what it would have."""
        pipeline_index, pipelines = (int(value) for value in pipeline)

        def label(index, images):
            size = tf.shape(images, out_type=tf.int64)[0]
            step, slot = start_step + index // per_step, index % per_step
            batch = (step * pipelines + pipeline_index) * per_step + slot
            positions = batch * size + tf.range(size, dtype=tf.int64)
            return images, drawn_style_vectors(positions, self.num_styles, seed)

        return dataset.enumerate().map(label)

    def split_batch(self, data):
        """``(images, style vectors (B, N))`` from a labelled batch."""
        return data[0], data[1]

    def stylize(self, content_batch, styles, training=False):
        """The student's outputs with each image's style vector."""
        return self.transform_net([content_batch, styles], training=training)

    def teach(self, content_batch, styles=None):
        """The teacher's outputs with ``styles`` (the preview's vector when None)."""
        if styles is None:
            styles = ops.tile(self.preview_vector[None], (ops.shape(content_batch)[0], 1))
        outputs = self.teacher([content_batch, styles], training=False)
        return ops.stop_gradient(ops.cast(outputs, "float32"))

    def record_styles(self, styles):
        self.preview_vector.assign(ops.cast(styles[0], "float32"))

    def preview_rows(self):
        """A row per style: the last batch's first content image | teacher | student."""
        content = ops.tile(self.preview_input[None], (self.num_styles, 1, 1, 1))
        vectors = ops.eye(self.num_styles, dtype="float32")
        teacher = ops.convert_to_numpy(self.teach(content, vectors))
        student = ops.convert_to_numpy(self.transform_net([content, vectors], training=False))
        return [(self.preview_input, *pair) for pair in zip(teacher, student, strict=True)]


def build_student(config: DistillConfig, num_styles: int = 1):
    """The untrained student transform net of ``config`` (its architecture and padding), of
    ``num_styles`` styles (its teacher's)."""
    from kstyle.transform_net import build_transform_net

    return build_transform_net(config.arch, padding=config.padding, num_styles=num_styles)


def build_distillation_trainer(config: DistillConfig):
    """The compiled :class:`DistillationTrainer` of ``config`` and its (built) optimizer, like
    ``kstyle.trainer.build_trainer``: call it inside the strategy's scope. The student is
    built with ``config.mixed_precision``'s dtype policy; the teacher keeps its own."""
    from kstyle.distribute import dtype_policy
    from kstyle.loss_net import build_loss_net
    from kstyle.style_tables import style_count

    exported = teacher_format(config.teacher) is not None
    # an exported teacher was opened outside the strategy's scope, whose variables it must
    # not take (a SavedModel's then fail outside strategy.run)
    teacher = config.opened_teacher() if exported else load_teacher(config.teacher)
    if config.seed is not None:  # the student's start: the seed's, however the teacher loaded
        keras.utils.set_random_seed(config.seed)
    count = 1 if exported else style_count(teacher)
    with dtype_policy(config.mixed_precision):
        options = {
            "loss_net": build_loss_net(config.vgg_weights) if config.uses_loss_net() else None,
            "perceptual_weight": config.perceptual_weight,
            "texture_weight": config.texture_weight,
            "image_size": config.image_size,
            "stability_weight": config.stability_weight,
        }
        student = build_student(config, count)
        if exported:
            trainer = FileTeacherDistillationTrainer(student, teacher, **options)
        elif count == 1:
            trainer = DistillationTrainer(student, teacher, **options)
        else:
            trainer = MultiStyleDistillationTrainer(student, teacher, count, **options)
        return trainer, compile_trainer(trainer, config)
