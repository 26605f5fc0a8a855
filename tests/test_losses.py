import numpy as np
import pytest

from kstyle.losses import (
    content_loss,
    gram_matrix,
    perceptual_loss,
    style_loss,
    total_variation_loss,
)

RNG = np.random.default_rng(0)


def np_gram(features):
    b, h, w, c = features.shape
    flat = features.reshape(b, h * w, c).astype(np.float64)
    return np.einsum("bkc,bkd->bcd", flat, flat) / (c * h * w)


@pytest.mark.numeric
def test_gram_matrix_matches_numpy(bars):
    features = RNG.uniform(0, 3, (3, 5, 7, 4)).astype("float32")
    # float32 matmul against float64 einsum: rounding only, at most 2.5 % of the tolerance on
    # every CPU path (docs/performance.md#numeric-bars); a wrong normalisation or layout is
    # off by whole factors
    gram = np.asarray(gram_matrix(features))
    bars.close("gram matrix vs numpy float64", gram, np_gram(features), rtol=1e-5, atol=0)


def test_gram_is_per_image_and_size_normalised():
    one = RNG.uniform(0, 1, (1, 4, 4, 2)).astype("float32")
    tiled = np.tile(one, (1, 2, 2, 1))  # same statistics on 4x the pixels
    np.testing.assert_allclose(np.asarray(gram_matrix(tiled)), np.asarray(gram_matrix(one)), 1e-5)
    batch = np.concatenate([one, 2 * one])
    grams = np.asarray(gram_matrix(batch))
    np.testing.assert_allclose(grams[1], 4 * grams[0], rtol=1e-5)


def test_content_loss_matches_numpy_and_is_zero_on_itself():
    a = RNG.normal(size=(2, 4, 6, 3)).astype("float32")
    b = RNG.normal(size=(2, 4, 6, 3)).astype("float32")
    assert float(content_loss(a, b)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)
    assert float(content_loss(a, a)) == 0.0


def test_style_loss_matches_numpy_and_broadcasts():
    layers = {"l1": (3, 8, 8, 4), "l2": (3, 4, 4, 6)}
    feats_y = {k: RNG.uniform(0, 2, s).astype("float32") for k, s in layers.items()}
    feats_s = {k: RNG.uniform(0, 2, (1, *s[1:])).astype("float32") for k, s in layers.items()}
    grams_y = {k: gram_matrix(v) for k, v in feats_y.items()}
    grams_s = {k: gram_matrix(v) for k, v in feats_s.items()}
    total, terms = style_loss(grams_y, grams_s)
    expected = {
        k: np.mean(np.sum((np_gram(feats_y[k]) - np_gram(feats_s[k])) ** 2, axis=(1, 2)))
        for k in layers
    }
    for k in layers:
        assert float(terms[k]) == pytest.approx(expected[k], rel=1e-4)
    assert float(total) == pytest.approx(sum(expected.values()), rel=1e-4)
    # (C, C) targets give the same as (1, C, C)
    total_2d, _ = style_loss(grams_y, {k: np.asarray(v)[0] for k, v in grams_s.items()})
    assert float(total_2d) == pytest.approx(float(total), rel=1e-6)


def test_style_loss_of_style_against_its_own_grams_is_zero_for_any_batch():
    feats = RNG.uniform(0, 2, (1, 6, 6, 5)).astype("float32")
    grams_s = {"l": gram_matrix(feats)}
    for batch in (1, 4):
        total, _ = style_loss({"l": gram_matrix(np.repeat(feats, batch, 0))}, grams_s)
        assert float(total) == pytest.approx(0.0, abs=1e-12)


def test_total_variation_matches_numpy():
    images = RNG.uniform(0, 255, (2, 5, 6, 3)).astype("float32")
    dy = np.diff(images.astype(np.float64), axis=1)
    dx = np.diff(images.astype(np.float64), axis=2)
    expected = np.mean((dy**2).sum(axis=(1, 2, 3)) + (dx**2).sum(axis=(1, 2, 3)))
    assert float(total_variation_loss(images)) == pytest.approx(expected, rel=1e-5)
    assert float(total_variation_loss(np.full((1, 4, 4, 3), 7.0, "float32"))) == 0.0


def test_perceptual_loss_weights_and_parts():
    shapes = {"a": (2, 8, 8, 4), "b": (2, 4, 4, 8)}
    fy = {k: RNG.uniform(0, 2, s).astype("float32") for k, s in shapes.items()}
    fx = {k: RNG.uniform(0, 2, s).astype("float32") for k, s in shapes.items()}
    grams_s = {
        k: gram_matrix(RNG.uniform(0, 2, (1, *s[1:])).astype("float32")) for k, s in shapes.items()
    }
    y = RNG.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    total, parts = perceptual_loss(
        fy, fx, grams_s, y, content_weight=2.0, style_weight=3.0, tv_weight=0.5, content_layer="b"
    )
    content = 2.0 * np.mean((fy["b"] - fx["b"]) ** 2)
    style = 3.0 * float(style_loss({k: gram_matrix(v) for k, v in fy.items()}, grams_s)[0])
    tv = 0.5 * float(total_variation_loss(y))
    assert float(parts["content"]) == pytest.approx(content, rel=1e-5)
    assert float(parts["style"]) == pytest.approx(style, rel=1e-5)
    assert float(parts["tv"]) == pytest.approx(tv, rel=1e-5)
    assert float(parts["style/a"]) + float(parts["style/b"]) == pytest.approx(style, rel=1e-5)
    assert float(total) == pytest.approx(content + style + tv, rel=1e-5)
    _, no_tv = perceptual_loss(fy, fx, grams_s, y, content_layer="b")
    assert float(no_tv["tv"]) == 0.0
