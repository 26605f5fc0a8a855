"""The ways kstyle can run a transform net's whole-image pass, and the one in use.

Every path computes the same function (float rounding aside): TensorFlow with the fused
upsampling graph (:func:`kstyle.forward.inference_net`, the default) or the net's own graph,
each with or without XLA, the fused graph with its output convolution on pixel blocks
(:mod:`kstyle.blocked_conv`), and LiteRT's fp32 kernels (XNNPACK) on the verified TFLite
export at the image's size. Which is fastest depends on the CPU, its vector units and the library
versions, so ``kstyle tune`` measures them (:mod:`kstyle.tuning`) and the commands apply its
choice with :func:`use_choice`; without one, the default path runs.
"""

import dataclasses
import hashlib
import os
import weakref

import numpy as np

from kstyle.forward import run_model
from kstyle.tune_store import cache_folder, nearest_size


@dataclasses.dataclass(frozen=True)
class StylizePath:
    """One way to run the pass: ``runtime`` ``tensorflow`` (``fused`` graph or not, ``xla``
    or not, the wide output convolution ``blocked`` or not) or ``litert`` (fp32 TFLite of the
    fused graph, at a fixed size per shape)."""

    name: str
    runtime: str = "tensorflow"
    fused: bool = True
    xla: bool = False
    blocked: bool = False

    def run(self, model, batch: np.ndarray) -> np.ndarray:
        """``model`` on a float32 (B, H, W, 3) batch in [0, 255]; float32 (B, H, W, 3)."""
        if self.runtime == "litert":
            return litert_pass(model, batch)
        return run_model(model, batch, fused=self.fused, xla=self.xla, blocked=self.blocked)


DEFAULT_PATH = StylizePath("tensorflow")
PATHS = {
    path.name: path
    for path in (
        DEFAULT_PATH,
        StylizePath("tensorflow-xla", xla=True),
        StylizePath("tensorflow-blocked", blocked=True),
        StylizePath("tensorflow-unfused", fused=False),
        StylizePath("tensorflow-unfused-xla", fused=False, xla=True),
        StylizePath("litert", runtime="litert"),
    )
}

_choice = None  # the sizes of the tuned choice in use: [{"pixels": N, "path": name}, ...]


def use_choice(choice: dict | None) -> None:
    """Runs every later whole-image pass (:func:`run_pass`) on the path that ``choice`` (a
    stylize choice of ``kstyle tune``: its ``sizes``, each ``pixels`` and ``path``) measured
    fastest at the nearest size; None returns to the default path."""
    global _choice
    _choice = None if choice is None else list(choice["sizes"])


def chosen_path(pixels: int, fallback: bool = False) -> StylizePath:
    """The path the choice in use gives an image of ``pixels`` (H x W), or the default;
    ``fallback``: the fastest TensorFlow path measured at that size instead."""
    if not _choice:
        return DEFAULT_PATH
    size = nearest_size(_choice, pixels)
    return PATHS.get(size.get("tensorflow_path" if fallback else "path"), DEFAULT_PATH)


def run_pass(model, batch: np.ndarray) -> np.ndarray:
    """``model``'s whole-image pass on a float32 (B, H, W, 3) batch, on :func:`chosen_path`.

    LiteRT runs a flatbuffer converted for each image size (seconds for the seed net), so a
    size that LiteRT has no flatbuffer for yet, in memory or in the cache folder, goes to the
    fastest TensorFlow path the first time it comes, and to LiteRT from the second: a single
    photo of a new size never waits for a conversion, a folder of same-size photos or a video
    converts once."""
    path = chosen_path(batch.shape[1] * batch.shape[2])
    if path.runtime == "litert" and not _litert_ready(model, tuple(batch.shape[1:3])):
        path = chosen_path(batch.shape[1] * batch.shape[2], fallback=True)
    return path.run(model, batch)


_SEEN = weakref.WeakKeyDictionary()  # model -> the (H, W) its passes have run at


def _litert_ready(model, shape) -> bool:
    """Whether LiteRT should run ``model`` at ``shape`` now: a flatbuffer is at hand, or the
    size came before (it is converted now). Records the size."""
    seen = _SEEN.setdefault(model, set())
    ready = (
        shape in seen
        or shape in _INTERPRETERS.get(model, {})
        or os.path.isfile(_flatbuffer_path(model, shape))
    )
    seen.add(shape)
    return ready


_INTERPRETERS = weakref.WeakKeyDictionary()  # model -> {(H, W): LiteRT interpreter}


def litert_pass(model, batch: np.ndarray) -> np.ndarray:
    """``model`` run by LiteRT (fp32, XNNPACK, every core) on a float32 (B, H, W, 3) batch of
    whole pixel values, one image at a time; float32 (B, H, W, 3) of whole values.

    The flatbuffer is kstyle's verified uint8 TFLite export of ``model`` at H x W, converted
    once and kept in kstyle's cache folder (``litert/``, keyed by the net and the size)."""
    interpreters = _INTERPRETERS.setdefault(model, {})
    shape = tuple(batch.shape[1:3])
    if shape not in interpreters:
        interpreters[shape] = _interpreter(_flatbuffer(model, shape))
    interpreter = interpreters[shape]
    image, output = (interpreter.get_input_details()[0], interpreter.get_output_details()[0])
    results = []
    for frame in np.clip(np.rint(batch), 0, 255).astype(np.uint8):
        interpreter.set_tensor(image["index"], frame[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(output["index"])[0])
    return np.stack(results).astype(np.float32)


def _interpreter(flatbuffer: bytes):
    from kstyle.extras import require
    from kstyle.quiet import filtered_stderr

    module = require("ai_edge_litert.interpreter", "export")
    interpreter = module.Interpreter(model_content=flatbuffer, num_threads=os.cpu_count())
    with filtered_stderr():  # LiteRT announces its XNNPACK delegate here
        interpreter.allocate_tensors()
    return interpreter


def _flatbuffer_path(model, shape) -> str:
    """Where the cache folder keeps ``model``'s flatbuffer at ``shape``: named by the SHA-256
    of the size, kstyle's and TensorFlow's versions, the architecture and the weights."""
    import kstyle
    from kstyle.machine import version_of

    digest = hashlib.sha256(f"{shape} {kstyle.__version__} {version_of('tensorflow')}".encode())
    digest.update(model.to_json(sort_keys=True).encode())
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return os.path.join(cache_folder(), "litert", f"{digest.hexdigest()[:32]}.tflite")


def _flatbuffer(model, shape) -> bytes:
    """The fp32 TFLite of ``model`` at ``shape``, from the cache folder or converted (and
    kept there; a cache that cannot be written only costs the conversion next time)."""
    from kstyle.files import atomic_output

    path = _flatbuffer_path(model, shape)
    if os.path.isfile(path):
        with open(path, "rb") as file:
            return file.read()
    from kstyle.export.serving import plain_tflite_bytes

    flatbuffer = plain_tflite_bytes(model, "none", input_size=shape)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path) as temporary, open(temporary, "wb") as file:
            file.write(flatbuffer)
    except OSError:
        pass
    return flatbuffer
