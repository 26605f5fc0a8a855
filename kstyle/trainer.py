"""The training model: one ``keras.Model`` that composes the transform net and the loss net.

Its ``train_step`` runs Y = transform(X), the frozen loss net on Y and X, the weighted
perceptual loss against style Gram matrices computed once, and applies gradients to the
transform net only (keras-io AdaIN style). Use it with ``compile(optimizer=...)`` and ``fit``.

Under a ``tf.distribute`` strategy (build it inside ``strategy.scope()``), each replica's loss
is divided by the number of replicas before its gradients are summed across replicas, so a step
equals the single-device step on the whole (global) batch. With a ``LossScaleOptimizer``
(float16 mixed precision) the loss is scaled before differentiation and the optimizer unscales.
"""

import keras
import tensorflow as tf
from keras import ops

from kstyle.constants import (
    CONTENT_WEIGHT,
    IMAGE_SIZE,
    STABILITY_NOISE_SIGMA,
    STYLE_WEIGHT,
    TV_WEIGHT,
)
from kstyle.graph import size_multiple
from kstyle.internals import strategy_supports_no_merge_call
from kstyle.loss_net import CONTENT_LAYER, STYLE_LAYERS
from kstyle.losses import gram_matrix, perceptual_loss, picture_mse

LOSS_NAMES = ("loss", "content", "style", "tv")


class TransformNetTrainer(keras.Model):
    """What every trainer of a transform net shares: the step, its NaN guard, distribution
    and loss scaling, the losses it reports and its preview. A subclass computes the losses.

    Args:
        transform_net: the network being trained (see ``build_transform_net``).
        image_size: the training image size, for the preview variables.
        stability_weight: λ of the stability term (:func:`stability_term`; 0: off).
        extra_losses: the names of a subclass's optional terms that are on, reported after
            the class's ``loss_names``.

    ``loss_names`` are the losses a step reports, the total ``"loss"`` first (the columns of
    ``history.csv``); ``plotted`` the ones ``losses.png`` draws.

    After every step, ``last_losses`` holds that step's (not the running mean's) weighted
    losses over the global batch, ``last_gradient_norm`` the global norm of its gradients (0
    under float16 loss scaling, which handles overflow itself), and ``preview_input`` /
    ``preview_output`` the first image of the (first replica's) batch and its output;
    callbacks read them to write curves and previews (:meth:`preview_panels`). Every replica
    holds the same values, so reading them needs no communication.

    A step whose loss or gradient norm is not finite (on any replica) is not applied, so the
    weights stay finite; ``NonFiniteLossGuard`` then stops the run. The check is part of the
    compiled step, before any fused kernel can turn a NaN into a finite-looking loss.
    """

    loss_names = LOSS_NAMES
    plotted = ("content", "style", "loss")

    def __init__(
        self, transform_net, image_size=IMAGE_SIZE, stability_weight=0.0, extra_losses=(), **kwargs
    ):
        super().__init__(**kwargs)
        self.transform_net = transform_net
        self.stability_weight = float(stability_weight)
        # the optional terms only when on: else the losses and their columns as without them
        self.loss_names = (*type(self).loss_names, *extra_losses)
        if self.stability_weight:
            self.loss_names = (*self.loss_names, "stability")
            self.stability_multiple = size_multiple(transform_net)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}
        self.last_losses = {name: _replica_copy((), f"last_{name}") for name in self.loss_names}
        self.last_gradient_norm = _replica_copy((), "last_gradient_norm")
        shape = (image_size, image_size, 3)
        self.preview_input = _replica_copy(shape, "preview_input")
        self.preview_output = _replica_copy(shape, "preview_output")

    def compute_losses(self, content_batch, outputs, styles=None):
        """``(total, {name: part})`` for a content batch and the transform net's outputs, with a
        part for each of ``loss_names[1:]``; ``styles`` as :meth:`split_batch` gives them."""
        raise NotImplementedError

    def split_batch(self, data):
        """A dataset element as ``(content batch, styles)``: the styles are None here (a net
        of one style); a trainer of several styles reads each image's style index."""
        return (data[0] if isinstance(data, tuple) else data), None

    def stylize(self, content_batch, styles, training=False):
        """The transform net's outputs for a content batch (and its styles)."""
        return self.transform_net(content_batch, training=training)

    def label_stream(self, dataset, start_step: int, seed: int, per_step: int = 1, pipeline=(0, 1)):
        """The training stream as ``fit`` gets it from the content stream that starts at step
        ``start_step`` (the same here; a trainer of several styles adds each step's style,
        drawn by the run's data ``seed``). ``per_step`` batches of the stream make a step of
        this pipeline; ``pipeline``: its index and the number of input pipelines (workers)."""
        return dataset

    def preview_panels(self):
        """The preview's pictures, left to right: (H, W, 3) float32 variables in [0, 255]."""
        return (self.preview_input, self.preview_output)

    def preview_rows(self):
        """The preview as rows of pictures (each as :meth:`preview_panels`): one row here."""
        return [self.preview_panels()]

    def history_values(self) -> dict:
        """The last step's values for ``history.csv`` (the columns ``history_columns``)."""
        return {name: float(variable.numpy()) for name, variable in self.last_losses.items()}

    @property
    def history_columns(self) -> tuple:
        """The columns of ``history.csv`` after step and epoch: the losses."""
        return self.loss_names

    def summary_fields(self, fit_seconds: float) -> dict:
        """Fields for ``summary.json`` beside the losses, given the seconds ``fit`` took in
        this process (none here)."""
        return {}

    def extra_scalars(self) -> dict:
        """TensorBoard scalars of the last step beside the losses (none here)."""
        return {}

    def record_preview(self, content, outputs):
        """Keeps (1, H, W, 3) ``content`` and the transform net's ``outputs`` for the preview."""
        self.preview_input.assign(ops.cast(content[0], "float32"))
        self.preview_output.assign(ops.cast(outputs[0], "float32"))

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.transform_net(inputs, training=training)

    def train_step(self, data):
        content_batch, styles = self.split_batch(data)
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            stylized = self.stylize(content_batch, styles, training=True)
            total, parts = self.all_losses(content_batch, stylized, styles, training=True)
            # gradients are summed over replicas: each contributes its share of the mean
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.transform_net.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # float16: the optimizer skips overflowing steps and lowers its scale itself
            if replicas > 1:
                gradients = _overflow_everywhere_or_nowhere(gradients)
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
            self.last_gradient_norm.assign(0.0)
        else:
            norm = tf.linalg.global_norm(gradients)
            finite = _finite_everywhere(tf.math.is_finite(total) & tf.math.is_finite(norm))
            self._apply_if(finite, gradients, variables)
            self.last_gradient_norm.assign(norm)
        return self._record(total, parts, content_batch, stylized, styles)

    def _apply(self, gradients, variables):
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return tf.constant(True)

    def _apply_if(self, finite, gradients, variables):
        """Applies the step only when ``finite`` (the same on every replica): a non-finite step
        leaves the weights and the optimizer state as the last good step left them."""
        context = tf.distribute.get_replica_context()
        # a strategy's apply_gradients (even with one replica) makes a merge_call
        if not tf.distribute.has_strategy() or strategy_supports_no_merge_call():
            tf.cond(finite, lambda: self._apply(gradients, variables), lambda: tf.constant(False))
            return

        def across_replicas(distribution, finite, gradients, variables):
            # apply_gradients makes a merge_call, which a cond may not hold in replica context
            def apply():
                distribution.extended.call_for_each_replica(self._apply, (gradients, variables))
                return tf.constant(True)

            finite = distribution.experimental_local_results(finite)[0]
            tf.cond(finite, apply, lambda: tf.constant(False))

        context.merge_call(across_replicas, args=(finite, gradients, variables))

    def test_step(self, data):
        content_batch, styles = self.split_batch(data)
        stylized = self.stylize(content_batch, styles, training=False)
        total, parts = self.all_losses(content_batch, stylized, styles, training=False)
        return self._record(total, parts, content_batch, stylized, styles)

    def all_losses(self, content_batch, stylized, styles, training=False):
        """:meth:`compute_losses`, and with a stability weight its ``stability`` term
        (:func:`stability_term`, perturbed as the optimizer's step draws) added to the total."""
        total, parts = self.compute_losses(content_batch, stylized, styles)
        if not self.stability_weight:
            return total, parts
        context = tf.distribute.get_replica_context()
        replica = (context.replica_id_in_sync_group, context.num_replicas_in_sync)
        shift, noise = stability_perturbation(
            self.optimizer.iterations, ops.shape(content_batch), self.stability_multiple, replica
        )
        stylize = lambda images: self.stylize(images, styles, training=training)  # noqa: E731
        term = stability_term(
            stylize, content_batch, stylized, shift, noise, self.stability_multiple
        )
        stability = self.stability_weight * term
        return total + stability, {**parts, "stability": stability}

    def record_styles(self, styles):
        """Keeps what a step's ``styles`` say for the callbacks (nothing here)."""

    def _record(self, total, parts, content_batch, stylized, styles):
        self.record_styles(styles)
        values = {"loss": total, **{name: parts[name] for name in self.loss_names[1:]}}
        context = tf.distribute.get_replica_context()
        for name, value in values.items():
            self.trackers[name].update_state(value)
            # the mean over replicas of their (equal-sized) batches' losses: the global loss
            mean = context.all_reduce("sum", ops.cast(value, "float32")) / (
                context.num_replicas_in_sync
            )
            self.last_losses[name].assign(mean)
        if content_batch.shape[1:] == self.preview_input.shape:
            self.record_preview(content_batch[:1], stylized[:1])
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces multi-worker logs with strategy.reduce(..., axis=0), which fails
            # on scalars ("Invalid reduction dimension 0"): hand it rank-1 values instead.
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results


STABILITY_SEED = 0x57AB1E  # the perturbations' stream: with the step, its stateless seed


def stability_perturbation(step, shape, multiple: int, replica=(0, 1)):
    """The perturbation of training step ``step`` for a (B, H, W, 3) batch ``shape``: a shift
    (k_y, k_x) (int32, each drawn uniformly from 0 to ``multiple`` − 1) and Gaussian noise
    (B, H − m, W − m, 3) of σ = :data:`kstyle.constants.STABILITY_NOISE_SIGMA` levels, m =
    ``multiple`` (the net's size multiple, so that the shifted crop is a size the net takes).
    Stateless: a function of the step and of ``replica`` (its index and the number of
    replicas: each draws its own) alone, so a resumed run draws what it would have (with the
    same ``--jit-compile``: XLA draws other numbers from the same seed)."""
    index = tf.cast(step, tf.int64) * replica[1] + tf.cast(replica[0], tf.int64)
    seed = tf.stack([tf.constant(STABILITY_SEED, tf.int64), index])
    shift = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=multiple, dtype=tf.int32)
    crop = (shape[0], shape[1] - multiple, shape[2] - multiple, shape[3])
    noise = tf.random.stateless_normal(crop, seed=seed + 1, stddev=STABILITY_NOISE_SIGMA)
    return shift, noise


def stability_term(stylize, content, stylized, shift, noise, multiple: int):
    """The stability term of ``--stability-weight`` before its weight.

    For content images X (B, H, W, 3) in [0, 255], the net's outputs T(X) (``stylized``), a
    shift (k_y, k_x), each in [0, m), and noise N (B, H − m, W − m, 3) in levels
    (:func:`stability_perturbation`; m = ``multiple``): X̃ = X[:, k_y : k_y + H − m, k_x :
    k_x + W − m] + N is the image moved k_y pixels up and k_x left, cut to a size the net
    takes, with sensor noise. The term is :func:`kstyle.losses.picture_mse` of T(X) cut to
    the same window against T(X̃) (``stylize(X̃)``): the mean over B·(H − m)·(W − m)·3 values
    of ((T(X)_window − T(X̃)) / 255)². A net whose output follows the content, not its place
    in the frame or its noise, scores 0 (up to its padding near the window's edges). Both
    passes carry gradients.
    """
    height, width = content.shape[1] - multiple, content.shape[2] - multiple
    begin = (0, shift[0], shift[1], 0)
    moved = tf.slice(content, begin, (-1, height, width, -1)) + tf.cast(noise, content.dtype)
    reference = tf.slice(stylized, begin, (-1, height, width, -1))
    return picture_mse(reference, stylize(moved))


class StyleTransferTrainer(TransformNetTrainer):
    """Trains ``transform_net`` to render content images in the style of ``style_image``.

    Args:
        transform_net: the network being trained (see ``build_transform_net``).
        loss_net: the frozen loss network (see ``build_loss_net``); it must return at least
            ``content_layer`` and ``style_layers``.
        style_image: (H, W, 3) or (1, H, W, 3) RGB in [0, 255], already at its training size.
        content_weight, style_weight, tv_weight: w_c, w_s, w_tv of ``perceptual_loss``.
        image_size: the training image size, for the preview variables.

    It reports the weighted ``content``, ``style`` and ``tv`` losses and their sum ``loss``;
    the rest is :class:`TransformNetTrainer`'s.
    """

    def __init__(
        self,
        transform_net,
        loss_net,
        style_image,
        content_weight=CONTENT_WEIGHT,
        style_weight=STYLE_WEIGHT,
        tv_weight=TV_WEIGHT,
        content_layer=CONTENT_LAYER,
        style_layers=STYLE_LAYERS,
        image_size=IMAGE_SIZE,
        **kwargs,
    ):
        super().__init__(transform_net, image_size=image_size, **kwargs)
        self.loss_net = loss_net
        self.loss_net.trainable = False
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.content_layer = content_layer
        self.style_layers = tuple(style_layers)
        self.style_grams = self.compute_style_grams(style_image)

    def style_targets(self, styles):
        """The Gram targets of a batch, ``{layer: (1, C, C)}``: the one style's."""
        return self.style_grams

    def compute_style_grams(self, style_image):
        """Gram matrices of the style image at each style layer, ``{layer: (1, C, C)}`` (for N
        style images (N, H, W, 3): ``(N, C, C)``)."""
        style = ops.convert_to_tensor(style_image, dtype="float32")
        if len(style.shape) == 3:
            style = style[None]
        features = self.loss_net(style, training=False)
        return {
            layer: ops.stop_gradient(gram_matrix(features[layer])) for layer in self.style_layers
        }

    def compute_losses(self, content_batch, stylized, styles=None):
        """``(total, parts)`` of ``perceptual_loss`` for a content batch and its stylization."""
        features_y = self.loss_net(stylized, training=False)
        features_x = self.loss_net(content_batch, training=False)
        features_x = {self.content_layer: ops.stop_gradient(features_x[self.content_layer])}
        return perceptual_loss(
            features_y,
            features_x,
            self.style_targets(styles),
            stylized,
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
            content_layer=self.content_layer,
        )


def _overflow_everywhere_or_nowhere(gradients):
    """Makes every replica's gradients non-finite when any replica's are.

    Keras's LossScaleOptimizer checks its local (not yet summed) gradients for overflow; the
    replicas must take the same branch (skip the step and lower the scale, or apply it), or
    they would diverge, or wait forever for each other.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
    everywhere = _finite_everywhere(finite)
    return [tf.where(everywhere, g, tf.constant(float("nan"), g.dtype)) for g in gradients]


def _finite_everywhere(finite):
    """``finite`` (a boolean scalar) and-ed over every replica, so they all skip or all apply."""
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync == 1:
        return finite
    failures = context.all_reduce("sum", 1.0 - tf.cast(finite, tf.float32))
    return failures == 0.0


def _replica_copy(shape, name):
    """A float32 variable that every replica holds; replica 0's assignments win."""
    return tf.Variable(
        tf.zeros(shape),
        trainable=False,
        name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def build_trainer(config, style_image):
    """The compiled :class:`StyleTransferTrainer` of ``config`` (a ``kstyle.config.TrainConfig``)
    and its (built) optimizer; ``style_image`` as the trainer takes it.

    Call it inside the strategy's scope. Layers are built with ``config.mixed_precision``'s
    dtype policy; float16 wraps Adam in a ``LossScaleOptimizer``.
    """
    from kstyle.distribute import dtype_policy
    from kstyle.loss_net import build_loss_net
    from kstyle.transform_net import build_transform_net

    with dtype_policy(config.mixed_precision):
        trainer = StyleTransferTrainer(
            build_transform_net(config.arch, padding=config.padding),
            build_loss_net(config.vgg_weights),
            style_image,
            **style_loss_options(config),
        )
        return trainer, compile_trainer(trainer, config)


def style_loss_options(config) -> dict:
    """The style trainers' keyword arguments that ``config`` (a config of a style-training
    kind) sets: the loss weights (the stability weight too) and the training image size."""
    names = ("content_weight", "style_weight", "tv_weight", "image_size", "stability_weight")
    return {name: getattr(config, name) for name in names}


def compile_trainer(trainer, config):
    """Compiles ``trainer`` with ``config``'s Adam (in a ``LossScaleOptimizer`` under float16)
    and XLA choice, and returns the optimizer, built for the transform net's variables."""
    from kstyle.distribute import JIT_COMPILE

    optimizer = keras.optimizers.Adam(
        learning_rate=config.learning_rate, beta_1=config.beta1, beta_2=config.beta2
    )
    if config.mixed_precision == "float16":  # bfloat16 has float32's range: no scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=JIT_COMPILE[config.jit_compile])
    optimizer.build(trainer.transform_net.trainable_variables)
    return optimizer
