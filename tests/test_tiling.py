"""Tiled stylization: shared exact statistics, no seams, bounded memory."""

import logging
import os

import keras
import numpy as np
import pytest
from conftest import randomize_norms

from kstyle import staged, tiling
from kstyle.demo import structured_image
from kstyle.errors import KstyleError
from kstyle.forward import run_model
from kstyle.images import psnr, seam_metric
from kstyle.inference import stylize_array


@pytest.mark.numeric
def test_tiled_matches_untiled_without_seams(model, bars):
    image = structured_image(256, 256, seed=4)
    untiled = stylize_array(model, image, tile=0)
    tiled = stylize_array(model, image, tile=64)
    # measured 59.9 dB on every CPU path (docs/performance.md#numeric-bars); tiles normalised alone
    # (below) are over 10 dB worse, and 35 dB is where seams start to show
    bars.at_least("tiled (64) vs untiled, 256 px (dB)", psnr(untiled, tiled), 35.0)
    border, inside = seam_metric(tiled, 64)
    assert border <= 1.1 * inside, (border, inside)
    # without shared statistics every tile is normalised alone and the seams show
    naive = np.zeros_like(image)
    for top in range(0, 256, 64):
        for left in range(0, 256, 64):
            naive[top : top + 64, left : left + 64] = stylize_array(
                model, image[top : top + 64, left : left + 64]
            )
    assert psnr(untiled, naive) < psnr(untiled, tiled) - 10


@pytest.mark.numeric
def test_tiled_statistics_are_exact_when_the_statistics_pass_does_not_fit(model, tmp_path, bars):
    image = structured_image(256, 192, seed=6)
    untiled = stylize_array(model, image, tile=0)
    # a statistics budget of 4096 px: a downscaled statistics pass would drift well below 35 dB
    tiler = tiling.TiledStylizer(model, 64, stats_pixels=4096, directory=str(tmp_path))
    exact = stylize_array(model, image, tiler=tiler)
    # measured 60.2 dB on every CPU path (docs/performance.md#numeric-bars)
    bars.at_least("tiled, staged statistics vs untiled, 256x192 (dB)", psnr(untiled, exact), 35.0)
    assert os.listdir(tmp_path) == []  # the activations on disk are cleaned up
    tiler = tiling.TiledStylizer(model, 64, stats_pixels=4096, exact_statistics=False)
    assert psnr(untiled, stylize_array(model, image, tiler=tiler)) < psnr(untiled, exact) - 10


def _statistics_and_tiles(net, image, tmp_path):
    """(exact staged statistics with one band per M rows, whole-image statistics, tiled output
    with those statistics, untiled output)."""
    tiler = tiling.TiledStylizer(net, 32, stats_pixels=4096, directory=str(tmp_path))
    assert tiler.exact_statistics  # 128 x 96 > 4096 px: the staged pass runs
    assert all(
        tiler.plan.band_rows(stage, image.shape[1], 1) == tiler.multiple
        for stage in tiler.plan.stages
    )
    exact = tiling.exact_norm_statistics(
        tiler.tile_model, image, 1, directory=str(tmp_path), plan=tiler.plan
    )
    whole = run_model(tiler.statistics_model, image.astype(np.float32)[None])
    tiled = stylize_array(net, image, tiler=tiler)
    assert os.listdir(tmp_path) == []
    return exact, whole, tiled, stylize_array(net, image, tile=0)


@pytest.mark.numeric
def test_staged_statistics_are_exact_for_every_variant(variant_net, tmp_path, bars):
    image = structured_image(128, 96, seed=8)
    exact, whole, tiled, untiled = _statistics_and_tiles(variant_net, image, tmp_path)
    norms = [
        layer for layer in variant_net.layers if isinstance(layer, keras.layers.GroupNormalization)
    ]
    assert len(exact) == len(whole) == 2 * len(norms)
    # the same sums in another order: float rounding, at most 23 % of the tolerance on any CPU
    # path (docs/performance.md#numeric-bars); a wrong band or halo is off by far more
    _assert_statistics_match(bars, "variant nets", exact, whole)
    # exact statistics: only the tiles' float rounding differs; measured 59.5-76.6 dB over
    # the variant nets on every CPU path (docs/performance.md#numeric-bars), 4.5 dB above the bar
    bars.at_least("tiled (32) vs untiled, variant nets, 128x96 (dB)", psnr(untiled, tiled), 55.0)


def _assert_statistics_match(bars, nets, exact, whole):
    """The staged (band by band) norm statistics equal the whole image's within rtol and atol
    1e-5 (the bar recorded as "staged vs whole-image norm statistics, ``nets``")."""
    for staged_value, whole_value in zip(exact, whole, strict=True):
        bars.close(
            f"staged vs whole-image norm statistics, {nets}",
            staged_value,
            whole_value,
            rtol=1e-5,
            atol=1e-5,
        )


def _custom_net():
    """A net with a dilated 'same' conv, max pooling, an explicit asymmetric zero padding before
    a 'valid' 4x4 conv, an upsampling and a skip connection at half scale."""
    layers = keras.layers
    keras.utils.set_random_seed(5)
    norm = lambda name: layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)  # noqa: E731
    image = keras.Input((None, None, 3))
    a = layers.Conv2D(6, 3, strides=2, padding="same", name="c1")(image)
    a = layers.ReLU(name="r1")(norm("n1")(a))
    b = norm("n2")(layers.Conv2D(6, 3, dilation_rate=2, padding="same", name="c2")(a))
    c = layers.ZeroPadding2D(((2, 1), (1, 2)))(layers.MaxPooling2D(2)(b))
    c = norm("n3")(layers.Conv2D(6, 4, padding="valid", name="c3")(c))
    d = layers.UpSampling2D(2)(c)
    d = layers.ReLU()(norm("n4")(layers.Conv2D(6, 3, padding="same", name="c4")(d)))
    e = layers.Add()([d, a])
    e = norm("n5")(layers.Conv2D(6, 3, padding="same", name="c5")(e))
    out = layers.Conv2D(3, 3, padding="same")(layers.UpSampling2D(2)(e))
    net = keras.Model(image, layers.Rescaling(255.0)(layers.Activation("sigmoid")(out)))
    return randomize_norms(net)


@pytest.mark.numeric
def test_the_plan_follows_pooling_dilation_explicit_padding_and_skips(tmp_path, bars):
    net = _custom_net()
    plan = tiling.statistics_plan(tiling.build_tile_model(net))
    found = [(stage.target.layer, stage.halo, stage.context) for stage in plan.stages]
    assert plan.multiple == 4
    assert found == [
        ("c1", 1, 4),  # 3x3 stride 2 at full scale
        ("r1", 0, 0),  # stored: read by c2 and the add
        ("c2", 4, 4),  # dilated 3x3 (extent 5) at scale 1/2: 2 rows
        ("c3", 8, 8),  # 2 rows above at 1/4 through a 2x2 max pooling: 4 rows at 1/2
        ("c4", 4, 4),  # 3x3 at 1/2 after a nearest x2: 1 row at 1/4
        ("c5", 2, 4),  # 3x3 at 1/2
    ]
    image = structured_image(128, 96, seed=9)
    exact, whole, tiled, untiled = _statistics_and_tiles(net, image, tmp_path)
    # as for the variant nets: at most 16 % of the tolerance on any CPU path
    _assert_statistics_match(bars, "custom net", exact, whole)
    # measured 87.8-89.0 dB on the CPU paths (docs/performance.md#numeric-bars)
    bars.at_least("tiled (32) vs untiled, custom net, 128x96 (dB)", psnr(untiled, tiled), 55.0)
    assert staged.receptive_radius(net) == 21  # c1: 2 * 10 + 1, where a needs 10 rows for c2
    assert tiling.TiledStylizer(net, 32).margin == 40  # 21 + feather / 2, rounded up to 4
    image = keras.Input((None, None, 3))
    wide = keras.layers.Conv2D(3, (1, 9), strides=2, padding="same")(image)  # columns count too
    assert staged.receptive_radius(keras.Model(image, wide)) == 4


def _small_net(middle, norm_groups=-1):
    """conv - norm - ``middle`` (a layer) - conv - norm - conv, on 8 channels."""
    layers = keras.layers
    keras.utils.set_random_seed(2)
    image = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, padding="same")(image)
    x = layers.GroupNormalization(groups=norm_groups, name="first_norm")(x)
    x = middle(layers.ReLU()(x))
    x = layers.GroupNormalization(groups=-1)(layers.Conv2D(8, 3, padding="same")(x))
    return keras.Model(image, layers.Conv2D(3, 3, padding="same")(x))


@pytest.mark.parametrize(
    "middle, fragment",
    [
        (
            keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="grow"),
            "Conv2DTranspose",
        ),
        (keras.layers.Cropping2D(((1, 1), (0, 0)), name="crop"), "Cropping2D"),
        (keras.layers.Conv2D(8, 3, padding="valid", name="shrink"), "not its input's size"),
    ],
    ids=["transpose", "cropping", "valid"],
)
def test_a_layer_the_plan_cannot_follow_is_named(middle, fragment):
    tile_model = tiling.build_tile_model(_small_net(middle))
    with pytest.raises(KstyleError, match=f"layer '{middle.name}'.*{fragment}"):
        tiling.statistics_plan(tile_model)


def test_unknown_layers_fall_back_to_approximate_statistics_with_a_warning(caplog, monkeypatch):
    net = randomize_norms(_small_net(keras.layers.Conv2DTranspose(8, 3, 2, "same", name="grow")))
    with caplog.at_level(logging.WARNING, logger="kstyle.tiling"):
        tiler = tiling.TiledStylizer(net, 32, stats_pixels=4096)
    assert not tiler.exact_statistics
    assert "'grow' (Conv2DTranspose)" in caplog.text and "approximate" in caplog.text
    image = structured_image(96, 128, seed=3)
    approximate = tiling.TiledStylizer(net, 32, stats_pixels=4096, exact_statistics=False)
    monkeypatch.setattr(tiling, "exact_norm_statistics", None)  # must not be called
    np.testing.assert_array_equal(tiler(image), approximate(image))


def test_a_group_norm_that_is_not_instance_norm_is_refused():
    net = _small_net(keras.layers.Identity(), norm_groups=2)
    for build in (tiling.build_statistics_model, tiling.build_tile_model):
        with pytest.raises(KstyleError, match="'first_norm'.*2 groups"):
            build(net)
    with pytest.raises(KstyleError, match="'first_norm'"):
        tiling.TiledStylizer(net, 32)


def test_temporary_files_are_removed_when_a_stage_fails(model, tmp_path, monkeypatch):
    tiler = tiling.TiledStylizer(model, 32, stats_pixels=4096, directory=str(tmp_path))
    seen = []
    original = staged._DiskArray.write

    def write(self, start, rows):
        seen.extend(os.listdir(os.path.dirname(self.path)))
        if len(seen) > 40:
            raise RuntimeError("disk full")
        original(self, start, rows)

    monkeypatch.setattr(staged._DiskArray, "write", write)
    with pytest.raises(RuntimeError, match="disk full"):
        tiler(structured_image(64, 96, seed=1))
    assert len(set(seen)) >= 2  # several stored tensors were on disk when it failed
    assert os.listdir(tmp_path) == []


def test_the_tile_model_copies_gamma_and_beta_and_its_norms_round_trip(model):
    tile_model = tiling.build_tile_model(model)
    fixed = [
        layer for layer in tile_model.layers if isinstance(layer, tiling.FixedStatsNormalization)
    ]
    assert len(fixed) == 15
    for layer in fixed:
        source = model.get_layer(layer.name)
        np.testing.assert_array_equal(layer.gamma.numpy(), source.gamma.numpy())
        np.testing.assert_array_equal(layer.beta.numpy(), source.beta.numpy())
        assert layer.epsilon == source.epsilon == 1e-5
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fixed[3]))
    assert type(copy) is tiling.FixedStatsNormalization
    assert copy.get_config() == fixed[3].get_config()
    statistics = [
        np.full((1, layer.mean.shape[0]), index + offset, np.float32)
        for index, layer in enumerate(fixed)
        for offset in (0.0, 0.5)
    ]
    tiling.set_norm_statistics(tile_model, statistics)
    for index, layer in enumerate(fixed):  # in graph order, mean then variance
        assert float(layer.mean[0]) == index and float(layer.variance[-1]) == index + 0.5
