"""Serving artifacts for a trained transform net: SavedModel, TFLite and ONNX, each verified.

Every artifact has one contract (:mod:`kstyle.export.serving`): uint8 RGB ``[batch, H, W, 3]``
in, uint8 RGB of the same shape out, for any H and W of at least 4 pixels. The modules:
``serving`` (the serving model and plain conversions), ``int8`` (full-integer TFLite),
``verify`` (running and checking artifacts) and ``writer`` (the export command's library).
"""

from kstyle.constants import FORMATS, QUANTIZATIONS
from kstyle.export.serving import export_model, serving_archive
from kstyle.export.verify import Runner, Verification, verify
from kstyle.export.writer import export, tflite_bytes

__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "Runner",
    "Verification",
    "export",
    "export_model",
    "serving_archive",
    "tflite_bytes",
    "verify",
]
