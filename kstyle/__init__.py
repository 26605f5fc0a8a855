"""kstyle: fast neural style transfer (Johnson, Alahi & Fei-Fei, ECCV 2016) for Keras 3.

Imports go down these layers (``tests/test_package.py`` checks it):

- base: ``errors``, ``constants`` (shared choices and defaults, no TensorFlow), ``files``
  (listing, atomic writes), ``images`` (read, write, compare), ``memory`` (the memory
  budget), ``progress``, ``demo``, ``extras`` (optional dependencies), ``quiet``
  (dependencies' start-up lines), ``web_runtime`` (the web page's runtime, from npm),
  ``web_site`` (a built page: its manifest, headers and server), ``coco`` (the COCO
  download), ``internals`` (the private TF/LiteRT calls left), ``checks``
  (what a command checks before it imports TensorFlow), ``lock`` (one process per run
  directory or output), ``smoke`` (smoke-test marks of model files), ``schedule`` (steps
  and epochs), ``presets`` (the transform-net presets, as data);
- training: ``data`` -> ``norms`` -> ``transform_net`` -> ``graph`` (a model's structure) ->
  ``style_tables`` (the per-style norm tables), ``loss_net`` -> ``losses`` -> ``trainer`` ->
  ``multi_style`` (N styles in one net, adding styles) and ``callbacks``, ``distill`` ->
  ``tasks`` (each kind of run's trainer), ``stopping`` -> ``run_dir`` -> ``run``, with
  ``distribute``, ``config``, ``add_style_config`` and ``distill_config`` (the options) below;
- inference: ``styles`` (style vectors, a style as a one-style net) -> ``forward`` (fused,
  compiled pass) -> ``staged`` (exact statistics in bands) -> ``tiling`` -> ``inference``
  (arrays) -> ``video``, ``stylize_files``, ``sheet`` and ``export`` (``serving``, ``int8``,
  ``verify``, ``writer``);
- ``cli`` on top.

The names below are loaded on first use, so ``import kstyle`` is quick and a command's
``--help`` never waits for TensorFlow. Loading a model registers kstyle's custom layers.
"""

import importlib
import os

# kstyle's trainer uses tf.GradientTape and tf.data; pin the backend unless the user chose one.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_EXPORTS = {
    "KstyleError": "kstyle.errors",
    "CONTENT_LAYER": "kstyle.loss_net",
    "STYLE_LAYERS": "kstyle.loss_net",
    "build_loss_net": "kstyle.loss_net",
    "content_loss": "kstyle.losses",
    "gram_matrix": "kstyle.losses",
    "perceptual_loss": "kstyle.losses",
    "style_loss": "kstyle.losses",
    "total_variation_loss": "kstyle.losses",
    "load_image": "kstyle.images",
    "load_transform_net": "kstyle.transform_net",
    "build_transform_net": "kstyle.transform_net",
    "stylize": "kstyle.stylize_files",
    "stylize_array": "kstyle.inference",
    "StyleTransferTrainer": "kstyle.trainer",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kstyle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
