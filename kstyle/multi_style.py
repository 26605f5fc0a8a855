"""Training one network for N styles at once (conditional instance norm, :mod:`kstyle.norms`).

Each step draws one style for its whole batch, by a schedule that is a function of the data
seed and the step alone (so a resumed run draws the very styles it would have): the steps go
in rounds of one step per drawn style, each round in its own order,
``argsort(stateless_uniform([M], seed=(data_seed, round)))`` over the M styles drawn. The
batch's images carry that style's index; the net gets it as a one-hot style vector and the
loss takes that style's Gram targets, all computed once at the start.
"""

import tensorflow as tf
from keras import ops

from kstyle.trainer import StyleTransferTrainer


def scheduled_style(step, drawn, seed: int):
    """The style index (int32 scalar) of training step ``step`` (0-based int64), drawn from
    the indices ``drawn`` (a list) as :data:`kstyle.constants.STYLE_SCHEDULE_RULE` says."""
    count = len(drawn)
    step = tf.cast(step, tf.int64)
    round_, position = step // count, step % count
    seeds = tf.stack([tf.constant(seed, tf.int64), round_])
    order = tf.argsort(tf.random.stateless_uniform([count], seed=seeds))
    return tf.gather(tf.constant(drawn, tf.int32), order[position])


class MultiStyleTransferTrainer(StyleTransferTrainer):
    """Trains a net of N styles (two inputs: content, style vector) on N style images.

    Args:
        transform_net: a net of N styles (``build_transform_net(num_styles=N)``).
        loss_net: as :class:`kstyle.trainer.StyleTransferTrainer`.
        style_images: (M, S, S, 3) RGB in [0, 255] at their training size: the styles that
            the schedule draws, in the order of ``drawn``.
        style_names: N names, for TensorBoard's per-style losses.
        drawn: the M style indices the schedule draws (default: all N).
        **kwargs: the weights and the rest, as :class:`kstyle.trainer.StyleTransferTrainer`.

    ``last_style`` holds the style of the last step; the preview is a row per style: the
    first content image of the last batch, and its stylization in that style.
    """

    def __init__(
        self,
        transform_net,
        loss_net,
        style_images,
        style_names,
        drawn=None,
        **kwargs,
    ):
        super().__init__(transform_net, loss_net, style_images, **kwargs)
        self.style_names = tuple(style_names)
        self.num_styles = len(self.style_names)
        self.drawn = list(range(self.num_styles)) if drawn is None else [int(i) for i in drawn]
        rows = [self.drawn.index(i) if i in self.drawn else 0 for i in range(self.num_styles)]
        self.target_rows = tf.constant(rows, tf.int32)  # style index -> row of style_grams
        self.last_style = tf.Variable(0, trainable=False, name="last_style", dtype=tf.int32)

    def label_stream(self, dataset, start_step: int, seed: int, per_step: int = 1, pipeline=(0, 1)):
        """Pairs each batch of the content stream that starts at ``start_step`` with its
        step's style index (the schedule of ``seed``, the run's data seed), one per image:
        ``(images (B, H, W, 3), styles (B,) int32)``. ``per_step`` consecutive batches make
        one step (a pipeline that feeds several replicas hands them one batch each); every
        ``pipeline`` draws the step's style."""

        def label(index, images):
            step = start_step + index // per_step
            style = scheduled_style(step, self.drawn, seed)
            return images, tf.fill(tf.shape(images)[:1], style)

        return dataset.enumerate().map(label)

    def compute_style_grams(self, style_images):
        """``{layer: (N, C, C)}``, one style image at a time through the loss net (all N at
        once would hold N images' activations)."""
        grams = [
            super(MultiStyleTransferTrainer, self).compute_style_grams(image)
            for image in style_images
        ]
        return {layer: ops.concatenate([g[layer] for g in grams], axis=0) for layer in grams[0]}

    def split_batch(self, data):
        """``(images, styles (B,))`` from a labelled batch."""
        return data[0], data[1]

    def stylize(self, content_batch, styles, training=False):
        """The net's outputs with each image's style as a one-hot style vector."""
        vectors = ops.one_hot(styles, self.num_styles, dtype="float32")
        return self.transform_net([content_batch, vectors], training=training)

    def style_targets(self, styles):
        """Each image's style's Gram targets, ``{layer: (B, C, C)}``."""
        rows = ops.take(self.target_rows, styles)
        return {layer: ops.take(gram, rows, axis=0) for layer, gram in self.style_grams.items()}

    def record_styles(self, styles):
        self.last_style.assign(ops.cast(styles[0], "int32"))

    def history_values(self) -> dict:
        """The losses and ``style_index``, the style the last step drew."""
        return {**super().history_values(), "style_index": int(self.last_style.numpy())}

    @property
    def history_columns(self) -> tuple:
        return (*self.loss_names, "style_index")

    def extra_scalars(self) -> dict:
        """``style_loss/<name>``: the last step's style loss, under the style it drew."""
        name = self.style_names[int(self.last_style.numpy())]
        return {f"style_loss/{name}": float(self.last_losses["style"].numpy())}

    def preview_rows(self):
        """A row per style: the last batch's first content image | its stylization."""
        content = ops.tile(self.preview_input[None], (self.num_styles, 1, 1, 1))
        vectors = ops.eye(self.num_styles, dtype="float32")
        outputs = ops.convert_to_numpy(self.transform_net([content, vectors], training=False))
        return [(self.preview_input, output) for output in outputs]


def build_multi_style_trainer(config, style_images, style_names):
    """The compiled :class:`MultiStyleTransferTrainer` of ``config`` (a
    ``kstyle.config.TrainConfig`` of N styles) and its optimizer; ``style_images`` (N, S, S,
    3). Call it inside the strategy's scope, as ``kstyle.trainer.build_trainer``."""
    from kstyle.distribute import dtype_policy
    from kstyle.loss_net import build_loss_net
    from kstyle.trainer import compile_trainer, style_loss_options
    from kstyle.transform_net import build_transform_net

    with dtype_policy(config.mixed_precision):
        net = build_transform_net(config.arch, padding=config.padding, num_styles=len(style_names))
        trainer = MultiStyleTransferTrainer(
            net,
            build_loss_net(config.vgg_weights),
            style_images,
            style_names,
            **style_loss_options(config),
        )
        return trainer, compile_trainer(trainer, config)


def build_add_style_trainer(config, style_images):
    """The compiled :class:`MultiStyleTransferTrainer` of an add-style run (a
    ``kstyle.add_style_config.AddStyleConfig``) and its optimizer: the base run's net with a
    row more per new style (:func:`kstyle.style_tables.extend_styles`), everything frozen but the
    style tables, and a schedule that draws only the new styles (``style_images``, (M, S, S,
    3)). Call it inside the strategy's scope."""
    from kstyle.distribute import dtype_policy
    from kstyle.loss_net import build_loss_net
    from kstyle.style_tables import extend_styles, style_count
    from kstyle.trainer import compile_trainer, style_loss_options
    from kstyle.transform_net import build_transform_net, load_transform_net

    base = load_transform_net(config.from_run)
    old, new = style_count(base), len(style_images)
    names = config.style_names()
    if len(names) != old + new:  # names recorded for another net: number them instead
        names = [str(index) for index in range(old + new)]
    with dtype_policy(config.mixed_precision):
        net = build_transform_net(config.arch, padding=config.padding, num_styles=old + new)
        extend_styles(net, base)
        trainer = MultiStyleTransferTrainer(
            net,
            build_loss_net(config.vgg_weights),
            style_images,
            names,
            drawn=range(old, old + new),
            **style_loss_options(config),
        )
        return trainer, compile_trainer(trainer, config)
