"""FLOP counts of the transform nets, checked against arithmetic written out per layer."""

import keras
import pytest

from kstyle.flops import count_flops
from kstyle.forward import inference_net
from kstyle.transform_net import build_transform_net


def _conv(k, cin, cout, pixels):
    """Multiply-adds of a k x k convolution with ``pixels`` output pixels."""
    return k * k * cin * cout * pixels


def _separable(cin, cout, pixels):
    """A 3x3 depthwise convolution then a 1x1 one."""
    return (9 * cin + cin * cout) * pixels


def _hand_count(arch, height, width):
    """FLOPs written out layer by layer: full, 1/2 and 1/4 resolution on the way down (the
    stride-2 convs round up), twice and four times the 1/4 size on the way up."""
    full = height * width
    half = -(-height // 2) * -(-width // 2)
    rows, columns = -(-height // 4), -(-width // 4)
    quarter = rows * columns
    up_half, up_full = 4 * quarter, 16 * quarter
    if arch == "johnson":  # 32, 64, 128 channels, 5 blocks, 9x9 edges
        macs = (
            _conv(9, 3, 32, full)  # down1
            + _conv(3, 32, 64, half)  # down2
            + _conv(3, 64, 128, quarter)  # down3
            + 10 * _conv(3, 128, 128, quarter)  # 5 residual blocks
            + _conv(3, 128, 64, up_half)  # up1 (after the upsampling)
            + _conv(3, 64, 32, up_full)  # up2
            + _conv(9, 32, 3, up_full)  # out
        )
    elif arch == "slim":  # 16, 32, 64 channels, 5 blocks, 9x9 edges
        macs = (
            _conv(9, 3, 16, full)
            + _conv(3, 16, 32, half)
            + _conv(3, 32, 64, quarter)
            + 10 * _conv(3, 64, 64, quarter)
            + _conv(3, 64, 32, up_half)
            + _conv(3, 32, 16, up_full)
            + _conv(9, 16, 3, up_full)
        )
    else:  # tiny: 16, 32, 64 channels, 3 separable blocks, 7x7 edges
        macs = (
            _conv(7, 3, 16, full)
            + _separable(16, 32, half)
            + _separable(32, 64, quarter)
            + 6 * _separable(64, 64, quarter)
            + _separable(64, 32, up_half)
            + _separable(32, 16, up_full)
            + _conv(7, 16, 3, up_full)
        )
    return 2 * macs


# the seed's count at 256², computed by hand: 2 * 10,078,912,512 multiply-adds
SEED_FLOPS_256 = 20_157_825_024


@pytest.mark.parametrize("arch", ["johnson", "slim", "tiny"])
@pytest.mark.parametrize("size", [(256, 256), (720, 1280), (37, 50)])
def test_count_flops_matches_the_hand_count(arch, size):
    net = build_transform_net(arch)
    assert count_flops(net, *size) == _hand_count(arch, *size)
    # reflect padding computes the same convolutions over the same output sizes
    assert count_flops(build_transform_net(arch, padding="reflect"), *size) == count_flops(
        net, *size
    )


def test_seed_count_and_preset_budgets():
    assert _hand_count("johnson", 256, 256) == SEED_FLOPS_256
    slim = count_flops(build_transform_net("slim"), 256, 256)
    tiny = count_flops(build_transform_net("tiny"), 256, 256)
    # counts from the layers' shapes (exact integers, no kernels): slim is 0.25 of the seed, so
    # [0.2, 0.3] is the preset's design bound, not a measured tolerance
    assert 0.2 <= slim / SEED_FLOPS_256 <= 0.3  # about a quarter of the seed
    assert tiny * 15 <= SEED_FLOPS_256 and tiny <= 1.35e9


def test_fused_upsampling_counts_four_ninths():
    """The fused inference graph counts its UpsampleConv2D at the low resolution: 4 phases of
    2x2 taps instead of 9 taps at twice the size."""
    net = build_transform_net()
    saved = 2 * (_conv(3, 128, 64, 128 * 128) + _conv(3, 64, 32, 256 * 256)) * 5 // 9
    assert count_flops(inference_net(net), 256, 256) == SEED_FLOPS_256 - saved


def test_other_convolutions_and_names_do_not_matter():
    """SeparableConv2D, grouped and 'valid' convolutions, counted by structure."""
    inputs = keras.Input((None, None, 8))
    x = keras.layers.SeparableConv2D(16, 3, depth_multiplier=2, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(4, 3, groups=4, padding="valid", name="tanh")(x)
    x = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", name="b")(x)
    model = keras.Model(inputs, x)
    # 30x20: separable at 30x20; grouped valid 3x3 -> 28x18, 4 input channels per group;
    # depthwise 5x5 stride 2 -> 14x9
    expected = (9 * 16 + 16 * 16) * 600 + 9 * 4 * 4 * 28 * 18 + 25 * 4 * 14 * 9
    assert count_flops(model, 30, 20) == 2 * expected
