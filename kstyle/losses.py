"""Perceptual losses as pure functions on ``keras.ops`` (magenta style).

Shapes: activations are (B, H, W, C); Gram matrices are (B, C, C). Every loss is computed in
float32 and returned as a scalar. The normalisations, exactly as the reference example:

* ``gram_matrix``: G = Fᵀ F / (C · H · W), F the (H·W) × C activations of one image.
* ``content_loss``: mean over all elements and images of (φ(Y) − φ(X))².
* ``style_loss``: Σ over layers of [ (1/B) Σ over images Σ over all C × C entries
  (G(φ(Y)) − G(φ(S)))² ].
* ``total_variation_loss``: (1/B) Σ over images of Σ (neighbour differences)², horizontal and
  vertical, over all pixels and channels (Johnson's regulariser; weight 0 by default).
"""

from keras import ops

from kstyle.constants import CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT
from kstyle.loss_net import CONTENT_LAYER


def gram_matrix(features):
    """Gram matrices of activations (B, H, W, C) -> (B, C, C), divided by C·H·W."""
    features = ops.cast(features, "float32")
    shape = ops.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    flat = ops.reshape(features, (shape[0], height * width, channels))
    gram = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)
    return gram / ops.cast(channels * height * width, "float32")


def content_loss(features_y, features_x):
    """Mean squared difference of two activation tensors of equal shape (a scalar)."""
    diff = ops.cast(features_y, "float32") - ops.cast(features_x, "float32")
    return ops.mean(ops.square(diff))


def style_loss(grams_y, style_grams):
    """Style loss summed over layers, and each layer's term.

    Args:
        grams_y: ``{layer: (B, C, C)}`` Gram matrices of the stylized batch.
        style_grams: ``{layer: (C, C) or (1, C, C)}`` Gram matrices of the style image;
            they broadcast over any batch size.

    Returns:
        ``(total, {layer: term})``: each term is the per-image sum of squared Gram differences,
        averaged over the batch; the total is their sum. Unweighted.
    """
    terms = {}
    for layer, gram_y in grams_y.items():
        target = ops.cast(style_grams[layer], "float32")
        if len(target.shape) == 2:
            target = target[None]
        per_image = ops.sum(ops.square(gram_y - target), axis=(1, 2))
        terms[layer] = ops.mean(per_image)
    return sum(terms.values()), terms


def total_variation_loss(images):
    """Squared total variation of (B, H, W, C) images, summed per image, averaged over B."""
    images = ops.cast(images, "float32")
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    per_image = ops.sum(ops.square(dy), axis=(1, 2, 3)) + ops.sum(ops.square(dx), axis=(1, 2, 3))
    return ops.mean(per_image)


def perceptual_loss(
    features_y,
    features_x,
    style_grams,
    stylized,
    content_weight=CONTENT_WEIGHT,
    style_weight=STYLE_WEIGHT,
    tv_weight=TV_WEIGHT,
    content_layer=CONTENT_LAYER,
):
    """The weighted training objective of the reference.

    Args:
        features_y: ``{layer: (B, h, w, c)}`` loss-net activations of the stylized batch Y.
        features_x: the same for the content batch X (only ``content_layer`` is used).
        style_grams: ``{layer: (C, C) or (1, C, C)}``; its keys choose the style layers.
        stylized: Y itself, (B, H, W, 3) in [0, 255], for the total-variation term.
        content_weight, style_weight, tv_weight: the weights w_c, w_s, w_tv.
        content_layer: the layer of the content term (relu3_3 in the reference).

    Returns:
        ``(total, parts)``: the scalar total, and a dict of weighted scalars with the keys
        ``content``, ``style``, ``tv`` and ``style/<layer>`` for each style layer.
    """
    content = content_weight * content_loss(features_y[content_layer], features_x[content_layer])
    grams_y = {layer: gram_matrix(features_y[layer]) for layer in style_grams}
    style_total, style_terms = style_loss(grams_y, style_grams)
    style = style_weight * style_total
    parts = {"content": content, "style": style}
    if tv_weight:
        parts["tv"] = tv_weight * total_variation_loss(stylized)
    else:
        parts["tv"] = ops.zeros((), dtype="float32")
    for layer, term in style_terms.items():
        parts[f"style/{layer}"] = style_weight * term
    total = content + style + parts["tv"]
    return total, parts


def picture_mse(first, second):
    """The mean over all elements of ((first − second) / 255)² for (B, H, W, 3) pictures in
    [0, 255]: the mean squared error of the pictures scaled to [0, 1] (0: identical; 1: black
    against white everywhere). A float32 scalar. Distillation's pixel loss, and the
    stability term of :func:`kstyle.trainer.stability_term` before its weight."""
    difference = (ops.cast(first, "float32") - ops.cast(second, "float32")) / 255.0
    return ops.mean(ops.square(difference))
