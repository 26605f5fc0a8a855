"""The staged statistics plan: which tensors are stored, and the context rows each stage's
kernels and strides need."""

import keras

from kstyle import staged, tiling


def test_the_seed_plan_derives_each_stages_context_from_kernels_and_strides(model):
    plan = tiling.statistics_plan(tiling.build_tile_model(model))
    found = [(stage.target.layer, stage.halo, stage.context) for stage in plan.stages]
    expected = [
        ("down1_conv", 4, 4),  # 9x9 at full scale
        ("down2_conv", 1, 4),  # 3x3 stride 2 'same': TensorFlow pads 0 rows above, 1 below
        ("down3_conv", 2, 4),  # the same at scale 1/2
        ("down3_relu", 0, 0),  # the residual stream, read by res1's conv and add
    ]
    for i in range(1, 6):  # a 3x3 stride-1 conv at scale 1/4 reads 1 row each side: 4 image rows
        expected += [(f"res{i}_a_conv", 4, 4), (f"res{i}_b_conv", 4, 4)]
        expected += [(f"res{i}_add", 0, 0)] if i < 5 else []  # res5's sum is read once: not stored
    # up1 and up2: a x2 upsampling fused with a 3x3 conv reads 1 row at the low scale
    expected += [("up1_conv", 4, 4), ("up2_conv", 2, 4)]
    assert found == expected
    assert [stage.keep for stage in plan.stages] == [True] * 19 + [False]
    assert {t.layer for t in plan.stages[-2].inputs} == {"res4_add", "res5_b_conv"}
    assert staged.receptive_radius(model) == 55
    assert tiling.TiledStylizer(model, 32).margin == 48  # 55 + feather / 2, capped at 48


def _radius(*layers):
    image = keras.Input((None, None, 3))
    x = image
    for layer in layers:
        x = layer(x)
    return staged.receptive_radius(keras.Model(image, x))


def test_receptive_radius_adds_up_kernels_strides_and_upsampling():
    conv = keras.layers.Conv2D
    assert _radius(conv(3, 9, padding="same")) == 4
    assert _radius(conv(3, 3, padding="same"), conv(3, 3, padding="same")) == 2
    assert _radius(conv(3, 3, padding="same", dilation_rate=2)) == 2
    # a 3x3 conv at half resolution reads 1 row there: 2 rows of the input, plus the stride-2
    # conv's own bottom row
    down = conv(3, 3, strides=2, padding="same")
    assert _radius(down, conv(3, 3, padding="same")) == 3
    assert _radius(conv(3, (1, 9), strides=2, padding="same")) == 4  # columns count too
