"""Values that the library and the commands share, in a module without TensorFlow.

A command's ``--help`` lists these choices and defaults without importing TensorFlow, and the
modules that use them (``transform_net``, ``data``, ``video``, ``export``) take them from here,
so each is written once.
"""

# The transform net's convolution paddings (``build_transform_net(padding=...)``).
PADDINGS = ("zeros", "reflect")
# Image sides the reference transform net maps to themselves: two stride-2 convolutions, then
# two x2 upsamplings (each preset's own multiple: ``kstyle.presets``).
SIZE_MULTIPLE = 4
# The reference's training defaults that the library's functions share with TrainConfig: the
# content and style loss weights (no total-variation term), the square images are resized to,
# the images per step, and the passes over the content images (without --steps).
EPOCHS = 2
CONTENT_WEIGHT = 1e-4
STYLE_WEIGHT = 3e-8
TV_WEIGHT = 0.0
IMAGE_SIZE = 256
BATCH_SIZE = 4
# The reference's tfds dataset: ``tfds_dataset``'s default, and what runs without --data
# trained on before kstyle fetched COCO's train2014.zip itself (kstyle.coco).
DEFAULT_TFDS_NAME = "coco/2014"
# The files that ``kstyle.stylize`` reads and writes as videos.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# What ``kstyle.export`` writes, and the TFLite quantizations it knows.
FORMATS = ("saved_model", "tflite", "onnx")
NO_QUANTIZATION = "none"
QUANTIZATIONS = (NO_QUANTIZATION, "float16", "dynamic", "int8")
# ``kstyle.export.export``'s calibration photos for int8, and its verification photo's height.
DEFAULT_CALIBRATION_COUNT = 100
DEFAULT_VERIFY_SIZE = 256
# Seconds between training's progress lines in a log (stdout not a terminal) when no
# ``--log-every`` is given.
LOG_INTERVAL_SECONDS = 30
# The in-browser runtime of ``kstyle export --format web``: its npm package (pinned in
# web/package-lock.json) and the files of it that a page needs (ES module, its wasm loader and
# the SIMD wasm binary, which also runs single-threaded), vendored into kstyle/web/runtime/ by
# scripts/vendor_web_runtime.py.
WEB_RUNTIME_PACKAGE = "onnxruntime-web"
WEB_RUNTIME_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
)

# ``kstyle serve``'s port on 127.0.0.1 (kstyle.export.web.site_server's default too).
DEFAULT_SERVE_PORT = 8000
# The web page's "native" processing resolution: the longer side is scaled down to at most
# this many pixels (a 12 MP photo on the seed net would exhaust the wasm heap).
WEB_MAX_SIDE = 2048

# Sensor noise, in uint8 levels (σ of a Gaussian): what kstyle.stability's static clip adds to
# each frame, and what --stability-weight perturbs each training image with.
STABILITY_NOISE_SIGMA = 2.0

# The name of a net of several styles' second input, (B, N) float32 (kstyle.norms), and of
# the style input of its exports.
STYLE_INPUT = "style"

# The style vector of each training image when a net of several styles is distilled
# (kstyle.distill, config.json): one style alone half the time, else a blend of two.
DISTILL_STYLE_RULE = (
    "per image, from u = stateless_uniform([4], seed=(data_seed, n)), n the image's place in "
    "the stream: styles i = floor(u0 N), j = floor(u1 N), a = 0 if u2 < 0.5 else u3; the "
    "vector (1 - a) e_i + a e_j"
)

# Which style each step of a run of several styles draws (kstyle.multi_style, config.json).
STYLE_SCHEDULE_RULE = (
    "rounds of one step per drawn style; round r's order is "
    "argsort(stateless_uniform([number of styles drawn], seed=(data_seed, r)))"
)
