"""The ways kstyle can run a transform net's whole-image pass, and the one in use.

Every path computes the same function (float rounding aside): TensorFlow with the fused
upsampling graph (:func:`kstyle.forward.inference_net`, the default) or the net's own graph,
each with or without XLA, the fused graph with its output convolution on pixel blocks
(:mod:`kstyle.blocked_conv`), and LiteRT's fp32 kernels (XNNPACK) on the TFLite export at
the image's size. Which is fastest depends on the CPU, its vector units and the library
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
    ``fallback``: the fastest path measured at that size that compiles nothing per size."""
    if not _choice:
        return DEFAULT_PATH
    size = nearest_size(_choice, pixels)
    return PATHS.get(size.get("tensorflow_path" if fallback else "path"), DEFAULT_PATH)


def run_pass(model, batch: np.ndarray) -> np.ndarray:
    """``model``'s whole-image pass on a float32 (B, H, W, 3) batch, on :func:`chosen_path`.

    XLA compiles and LiteRT converts for each image size (seconds for the seed net), so a
    size the chosen path has not prepared yet (XLA: not run before in this process; LiteRT:
    no flatbuffer in memory or in the cache folder) goes to the fastest path that needs
    neither the first time it comes, and to the chosen path from the second: a single photo
    never waits for a compilation, a folder of same-size photos or a video compiles once. A
    LiteRT conversion that fails leaves that size on the other path."""
    shape = tuple(batch.shape[1:3])
    path = chosen_path(shape[0] * shape[1])
    if not _prepared(model, path, shape):
        path = chosen_path(shape[0] * shape[1], fallback=True)
    if path.runtime != "litert":
        return path.run(model, batch)
    try:
        return path.run(model, batch)
    except Exception:  # a size LiteRT cannot take: never a failed image
        _FAILED.setdefault(model, set()).add(shape)
        return chosen_path(shape[0] * shape[1], fallback=True).run(model, batch)


_SEEN = weakref.WeakKeyDictionary()  # model -> {path name: the (H, W) it ran at}
_FAILED = weakref.WeakKeyDictionary()  # model -> the (H, W) LiteRT could not convert


def _prepared(model, path: StylizePath, shape) -> bool:
    """Whether ``path`` should run ``model`` at ``shape`` now: it needs nothing per size, or
    has it at hand, or the size came before (it prepares it now). Records the size."""
    if not path.xla and path.runtime != "litert":
        return True
    if shape in _FAILED.get(model, set()):
        return False
    seen = _SEEN.setdefault(model, {}).setdefault(path.name, set())
    ready = shape in seen or (
        path.runtime == "litert"
        and (
            shape in _INTERPRETERS.get(model, {}) or os.path.isfile(_flatbuffer_path(model, shape))
        )
    )
    seen.add(shape)
    return ready


_INTERPRETERS = weakref.WeakKeyDictionary()  # model -> {(H, W): LiteRT interpreter}, newest last
KEPT_INTERPRETERS = 2  # per model: each holds its size's activations


def litert_pass(model, batch: np.ndarray) -> np.ndarray:
    """``model`` run by LiteRT (fp32, XNNPACK, every core) on a float32 (B, H, W, 3) batch of
    whole pixel values, one image at a time; float32 (B, H, W, 3) of whole values.

    The flatbuffer is kstyle's uint8 TFLite export of ``model`` at H x W (the conversion
    ``kstyle export`` verifies), converted once and kept in kstyle's cache folder
    (``litert/``, keyed by the net and the size); the interpreters of the last
    :data:`KEPT_INTERPRETERS` sizes are kept in memory."""
    interpreters = _INTERPRETERS.setdefault(model, {})
    shape = tuple(batch.shape[1:3])
    interpreter = interpreters.pop(shape, None) or _interpreter(_flatbuffer(model, shape))
    interpreters[shape] = interpreter  # the newest last; the oldest go
    for old in list(interpreters)[:-KEPT_INTERPRETERS]:
        del interpreters[old]
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
