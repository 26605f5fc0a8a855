import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_image, with_old_output

from kstyle.trainer import StyleTransferTrainer
from kstyle.transform_net import build_transform_net


def make_trainer(loss_net, image_size=32, learning_rate=1e-3, **weights):
    keras.utils.set_random_seed(0)
    style = random_image(40, 40, seed=11).astype("float32")
    trainer = StyleTransferTrainer(
        build_transform_net(), loss_net, style, image_size=image_size, **weights
    )
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999))
    return trainer


def content_batch(count=2, size=32):
    return np.stack([random_image(size, size, seed=20 + i) for i in range(count)]).astype("float32")


def test_the_built_in_output_trains_as_tanh_to_pixels_did_bit_for_bit(loss_net):
    """Three steps of the seed net with the built-in output (tanh, then Rescalings) and with
    the older TanhToPixels output, from the same weights on the same batches: the same losses
    and weights, exactly. (Compiled as training compiles by default: "auto", XLA where Keras
    picks it; test_transform_net checks the output's values and gradients with XLA too.)"""
    style = random_image(40, 40, seed=11).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(content_batch(6)).batch(2)
    losses, weights = {}, {}
    for output in ("built_in", "tanh_to_pixels"):
        keras.utils.set_random_seed(0)
        net = build_transform_net()
        trainer = StyleTransferTrainer(
            with_old_output(net) if output == "tanh_to_pixels" else net, loss_net, style, 32
        )
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        record = losses[output] = []
        after_step = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda _, logs, t=trainer, r=record: r.append(
                {name: float(value.numpy()) for name, value in t.last_losses.items()}
            )
        )
        trainer.fit(dataset, epochs=1, verbose=0, callbacks=[after_step], shuffle=False)
        weights[output] = net.get_weights()
    assert len(losses["built_in"]) == 3 and losses["built_in"] == losses["tanh_to_pixels"]
    assert losses["built_in"][0]["loss"] != losses["built_in"][2]["loss"]  # it trained
    for new, old in zip(weights["built_in"], weights["tanh_to_pixels"], strict=True):
        np.testing.assert_array_equal(new, old)


def test_style_grams_are_computed_once_and_batch_independent(loss_net):
    trainer = make_trainer(loss_net)
    shapes = {name: tuple(g.shape) for name, g in trainer.style_grams.items()}
    assert shapes == {
        "block1_conv2": (1, 64, 64),
        "block2_conv2": (1, 128, 128),
        "block3_conv3": (1, 256, 256),
        "block4_conv3": (1, 512, 512),
    }
    batch = content_batch(3)
    total3, _ = trainer.compute_losses(batch, trainer.transform_net(batch))
    totals = [trainer.compute_losses(b[None], trainer.transform_net(b[None]))[0] for b in batch]
    # per-image style terms are averaged over the batch, so any batch size gives the same scale
    assert float(total3) == pytest.approx(float(np.mean(totals)), rel=1e-4)


def test_one_step_trains_the_transform_net_only(loss_net):
    trainer = make_trainer(loss_net)
    transform_before = [w.numpy().copy() for w in trainer.transform_net.weights]
    vgg_before = [w.numpy().copy() for w in loss_net.weights]
    history = trainer.fit(content_batch(), batch_size=2, epochs=1, verbose=0)
    transform_after = [w.numpy() for w in trainer.transform_net.weights]
    pairs = zip(transform_before, transform_after, strict=True)
    changed = [not np.array_equal(a, b) for a, b in pairs]
    assert all(changed)  # every transform weight moved (Adam moves each by about lr)
    for before, w in zip(vgg_before, loss_net.weights, strict=True):
        np.testing.assert_array_equal(before, w.numpy())
    assert set(history.history) == {"loss", "content", "style", "tv"}
    last = {name: float(v.numpy()) for name, v in trainer.last_losses.items()}
    assert last["loss"] == pytest.approx(last["content"] + last["style"] + last["tv"], rel=1e-5)
    assert trainer.preview_input.numpy().std() > 0 and trainer.preview_output.numpy().std() > 0


def test_thirty_steps_lower_the_loss(loss_net):
    trainer = make_trainer(loss_net, content_weight=1e-4, style_weight=3e-8, tv_weight=1e-6)
    batch = content_batch(2)
    first = float(trainer.compute_losses(batch, trainer.transform_net(batch))[0])
    dataset = tf.data.Dataset.from_tensors(batch).repeat(30)
    history = trainer.fit(dataset, epochs=1, verbose=0)
    last = float(trainer.compute_losses(batch, trainer.transform_net(batch))[0])
    assert np.isfinite(history.history["loss"][-1])
    assert last < 0.5 * first, (first, last)


def test_gradients_do_not_reach_the_loss_net(loss_net):
    trainer = make_trainer(loss_net)
    batch = content_batch(1)
    with tf.GradientTape() as tape:
        total, _ = trainer.compute_losses(batch, trainer.transform_net(batch))
    grads = tape.gradient(total, trainer.transform_net.trainable_variables)
    assert all(g is not None for g in grads)
    assert loss_net.trainable_variables == []


class GradientBomb(keras.layers.Layer):
    """The identity, whose gradient becomes infinite on training call number ``at``."""

    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at = at
        self.calls = tf.Variable(0, trainable=False)

    def call(self, inputs, training=False):
        count = self.calls.assign_add(1) if training else self.calls

        @tf.custom_gradient
        def identity(x):
            def gradient(upstream):
                return tf.where(count == self.at, upstream + float("inf"), upstream)

            return tf.identity(x), gradient

        return identity(inputs)


def test_a_step_with_an_infinite_gradient_is_not_applied(loss_net):
    keras.utils.set_random_seed(0)
    net = build_transform_net(num_residual_blocks=1, width=0.25)
    inputs = keras.Input((None, None, 3))
    bombed = keras.Model(inputs, GradientBomb(at=2)(net(inputs)))
    style = random_image(40, 40, seed=11).astype("float32")
    trainer = StyleTransferTrainer(bombed, loss_net, style, image_size=32)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = content_batch(2)
    trainer.train_on_batch(batch)
    after_first = [w.numpy().copy() for w in net.weights]
    trainer.train_on_batch(batch)  # the bomb: loss finite, gradients infinite
    assert np.isfinite(float(trainer.last_losses["loss"].numpy()))
    assert not np.isfinite(float(trainer.last_gradient_norm.numpy()))
    for before, weight in zip(after_first, net.weights, strict=True):
        np.testing.assert_array_equal(before, weight.numpy())  # not applied, still finite
    trainer.train_on_batch(batch)  # a good step is applied again
    assert np.isfinite(float(trainer.last_gradient_norm.numpy()))
    moved = [
        not np.array_equal(b, w.numpy()) for b, w in zip(after_first, net.weights, strict=True)
    ]
    assert all(moved) and all(np.isfinite(w.numpy()).all() for w in net.weights)
