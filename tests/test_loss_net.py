import keras
import numpy as np
import pytest

from kstyle.errors import KstyleError
from kstyle.loss_net import STYLE_LAYERS, CaffePreprocess, build_loss_net


def test_taps_names_and_shapes(loss_net):
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 48, 3)).astype("float32")
    features = loss_net(x)
    assert set(features) == set(STYLE_LAYERS)
    shapes = {name: tuple(f.shape) for name, f in features.items()}
    assert shapes == {
        "block1_conv2": (2, 64, 48, 64),
        "block2_conv2": (2, 32, 24, 128),
        "block3_conv3": (2, 16, 12, 256),
        "block4_conv3": (2, 8, 6, 512),
    }
    # relu is fused into the Keras convs: taps are non-negative
    assert all(float(np.min(f)) >= 0.0 for f in features.values())


def test_frozen_and_cut_at_relu4_3(loss_net):
    assert loss_net.trainable_weights == []
    names = [layer.name for layer in loss_net.layers]
    assert "block4_conv3" in names
    assert not any(n.startswith("block5") or n == "block4_pool" for n in names)


def test_preprocessing_is_caffe_bgr_minus_mean():
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    by_hand = x[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype="float32")
    ours = np.asarray(CaffePreprocess()(x))
    # one float32 subtraction per value on both sides (no convolution kernel): equal up to
    # the ulp of values below 256 (3e-5); a wrong mean or channel order is off by > 1
    np.testing.assert_allclose(ours, by_hand, rtol=1e-6, atol=1e-4)
    keras_ref = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, keras_ref, rtol=1e-6, atol=1e-4)


def test_caffe_preprocess_config_round_trip():
    layer = CaffePreprocess(mean=(1.0, 2.0, 3.0), name="pre")
    clone = CaffePreprocess.from_config(layer.get_config())
    x = np.ones((1, 2, 2, 3), "float32")
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_weights_from_a_file_equal_vgg16_with_those_weights(tmp_path, suffix):
    keras.utils.set_random_seed(5)
    vgg = keras.applications.VGG16(include_top=False, weights=None)
    path = str(tmp_path / f"vgg{suffix}")
    if suffix == ".h5":  # Keras's legacy format, as the downloaded ImageNet file
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as file:
            legacy_h5_format.save_weights_to_hdf5_group(file, vgg)
    else:
        vgg.save_weights(path)
    net = build_loss_net(weights=path)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    reference = keras.Model(vgg.input, vgg.get_layer("block4_conv3").output)
    expected = reference(keras.applications.vgg16.preprocess_input(x.copy()))
    # the same weights through the same kernels in one process, with the ReLU fused or not:
    # float rounding only (rtol 1e-4); another init differs by whole units (checked below)
    np.testing.assert_allclose(
        np.asarray(net(x)["block4_conv3"]), np.asarray(expected), rtol=1e-4, atol=1e-4
    )
    # and differs from another random init, so the file was really used
    other = build_loss_net(weights=None)
    assert not np.allclose(np.asarray(other(x)["block4_conv3"]), np.asarray(expected))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(KstyleError, match="not found"):
        build_loss_net(weights=str(tmp_path / "nope.h5"))


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(KstyleError, match="could not load"):
        build_loss_net(weights=str(bad))
