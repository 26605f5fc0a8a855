"""kstyle: fast neural style transfer (Johnson, Alahi & Fei-Fei, ECCV 2016) for Keras 3.

Data flows one way through the package:
``data`` -> ``transform_net`` -> ``loss_net`` and ``losses`` -> ``trainer`` -> ``stylize``.

Importing kstyle registers its custom layers, so ``keras.saving.load_model("model.keras")``
works on a trained transform network afterwards.
"""

import os

# kstyle's trainer uses tf.GradientTape and tf.data; pin the backend unless the user chose one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kstyle.errors import KstyleError  # noqa: E402
from kstyle.loss_net import CONTENT_LAYER, STYLE_LAYERS, build_loss_net  # noqa: E402
from kstyle.losses import (  # noqa: E402
    content_loss,
    gram_matrix,
    perceptual_loss,
    style_loss,
    total_variation_loss,
)
from kstyle.stylize import load_image, load_transform_net, stylize, stylize_array  # noqa: E402
from kstyle.trainer import StyleTransferTrainer  # noqa: E402
from kstyle.transform_net import build_transform_net  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CONTENT_LAYER",
    "KstyleError",
    "STYLE_LAYERS",
    "StyleTransferTrainer",
    "__version__",
    "build_loss_net",
    "build_transform_net",
    "content_loss",
    "gram_matrix",
    "load_image",
    "load_transform_net",
    "perceptual_loss",
    "style_loss",
    "stylize",
    "stylize_array",
    "total_variation_loss",
]
