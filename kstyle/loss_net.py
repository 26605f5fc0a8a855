"""The frozen VGG-16 loss network: ImageNet "caffe" preprocessing, then VGG-16 up to relu4_3.

Keras fuses each ReLU into its convolution, so the taps relu1_2, relu2_2, relu3_3 and relu4_3
of the paper are the outputs of ``block1_conv2``, ``block2_conv2``, ``block3_conv3`` and
``block4_conv3``.
"""

import os

import keras
from keras import layers, ops

from kstyle.errors import KstyleError, cause_of

STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")
CONTENT_LAYER = "block3_conv3"
LAST_LAYER = "block4_conv3"
# The mean of ImageNet in B, G, R order, as Keras's vgg16.preprocess_input subtracts it.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


@keras.saving.register_keras_serializable(package="kstyle")
class CaffePreprocess(layers.Layer):
    """RGB in [0, 255] -> BGR minus the ImageNet mean, as the Caffe-trained VGG-16 expects.

    Input and output are (B, H, W, 3) floats; equals ``keras.applications.vgg16.preprocess_input``.
    """

    def __init__(self, mean=IMAGENET_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(self.mean, dtype=bgr.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


def keras_cache_path(filename: str = VGG16_NOTOP_FILE) -> str:
    """Where Keras's ``get_file`` caches a downloaded model file (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", filename)


def _vgg16(weights):
    """VGG-16 without its classifier; ``weights`` is "imagenet", a file path or None."""
    if weights == "imagenet":
        try:
            return keras.applications.VGG16(include_top=False, weights="imagenet")
        except Exception as error:  # urllib, HTTP and truncated-file errors alike
            raise KstyleError(
                f"could not download the VGG-16 ImageNet weights ({cause_of(error)}). "
                f"Put {VGG16_NOTOP_FILE} at {keras_cache_path()}, or pass --vgg-weights PATH, "
                "or --vgg-weights random (an untrained loss network, for offline smoke runs only)"
            ) from error
    vgg = keras.applications.VGG16(include_top=False, weights=None)
    if weights is not None:
        if not os.path.isfile(weights):
            raise KstyleError(f"VGG-16 weights file not found: {weights}")
        try:
            vgg.load_weights(weights)
        except Exception as error:
            raise KstyleError(
                f"could not load VGG-16 weights from {weights}: {error}".splitlines()[0]
            ) from error
    return vgg


def build_loss_net(weights="imagenet", taps=STYLE_LAYERS, name="loss_net"):
    """Builds the frozen loss network.

    Args:
        weights: ``"imagenet"`` (Keras downloads and caches the Caffe weights once),
            a path to a weights file of ``keras.applications.VGG16(include_top=False)``
            (``.weights.h5`` or Keras's legacy ``.h5``), or ``None`` / ``"random"``
            for an untrained network (tests and offline smoke runs only).
        taps: names of the VGG-16 layers whose outputs are returned.

    Returns:
        A frozen ``keras.Model`` from RGB floats in [0, 255], shape (B, H, W, 3), to a dict
        ``{tap name: (B, H / s, W / s, C) activations}``; s is 1, 2, 4, 8 for the default taps.

    Raises:
        KstyleError: the ImageNet download failed, or a weights file is missing or unreadable.
    """
    if weights == "random":
        weights = None
    vgg = _vgg16(weights)
    last = max(taps, key=lambda tap: [layer.name for layer in vgg.layers].index(tap))
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    x = CaffePreprocess(name="caffe_preprocess")(inputs)
    outputs = {}
    for layer in vgg.layers[1:]:
        x = layer(x)
        if layer.name in taps:
            outputs[layer.name] = x
        if layer.name == last:  # nothing past the last tap is built
            break
    model = keras.Model(inputs, outputs, name=name)
    model.trainable = False
    return model
