"""Shared fixtures. Everything is offline: untrained VGG-16 (weights=None), tiny images."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# kstyle tune's choices (and LiteRT's converted files) go to a folder of this session's own:
# a store of the machine's user must not change what the tests run, nor the tests touch it
os.environ["KSTYLE_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="kstyle-test-cache-")
__import__("atexit").register(__import__("shutil").rmtree, os.environ["KSTYLE_CACHE_DIR"], True)

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The seed of the nets that :func:`train_offline` trains (export_run, tiny_run): 0 in the
# suite; bench/bar_margins.py sets others to measure the export bars' margins across nets.
TRAIN_SEED = int(os.environ.get("KSTYLE_TEST_TRAIN_SEED", "0"))


def run(script, *args, env=None, cwd=None):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=600,
    )


# The command line scripts at the repository root and the module whose ``main`` each runs.
CLI_MODULES = {
    "train.py": "kstyle.cli.train",
    "stylize.py": "kstyle.cli.stylize",
    "export.py": "kstyle.cli.export",
    "kstyle sheet": "kstyle.cli.sheet",
    "kstyle tune": "kstyle.cli.tune",
    "kstyle info": "kstyle.cli.info",
}


def run_in_process(script, *args, env=None):
    """As :func:`run`, but ``script``'s ``main(argv)`` runs in this process, its stdout and
    stderr captured: no interpreter start-up and no TensorFlow import, seconds less per call.
    For what a command does with its arguments and files, not for what only a process shows
    (signals and kills, TensorFlow's own log lines, oneDNN's start-up choice, entry points).
    ``env`` is set in ``os.environ`` for the call only; kstyle's logger is left as it was.
    Returns a ``subprocess.CompletedProcess`` (returncode, stdout, stderr)."""
    import contextlib
    import importlib
    import io
    import logging

    main = importlib.import_module(CLI_MODULES[script]).main
    argv = [str(arg) for arg in args]
    logger = logging.getLogger("kstyle")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate)
    saved_env = {name: os.environ.get(name) for name in env or {}}
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update({name: str(value) for name, value in (env or {}).items()})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv, prog=script)
            except SystemExit as done:  # argparse: --help, a usage error; as the interpreter
                if done.code is None or isinstance(done.code, int):
                    code = done.code or 0
                else:  # a message: printed to stderr, status 1
                    print(done.code, file=sys.stderr)
                    code = 1
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        logger.handlers[:], logger.propagate = saved_logger[0], saved_logger[2]
        logger.setLevel(saved_logger[1])
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def assert_one_line_error(result, *fragments, code=2):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def random_image(height, width, channels=3, seed=0):
    """A smooth random uint8 image (gradients plus noise), so JPEG keeps it meaningful."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (x * 255 / max(1, width - 1)),
            (y * 255 / max(1, height - 1)),
            np.full((height, width), 128.0),
        ],
        axis=-1,
    )
    if channels > 3:
        base = np.concatenate([base, rng.uniform(0, 255, (height, width, channels - 3))], -1)
    image = base[..., :channels] + rng.normal(0, 20, size=(height, width, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(folder, count=8, size=(40, 48)):
    """Writes ``count`` good RGB JPEGs into ``folder`` and returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"img_{index:02d}.jpg")
        Image.fromarray(random_image(*size, seed=index)).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def loss_net():
    from kstyle.loss_net import build_loss_net

    return build_loss_net(weights=None)


@pytest.fixture(scope="session")
def saved_model_path(tmp_path_factory):
    """A small trained-for-nothing transform net saved as model.keras in a run directory."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(3)
    model = build_transform_net()
    run_dir = tmp_path_factory.mktemp("run")
    path = run_dir / "model.keras"
    model.save(path)
    return str(path)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    write_image_folder(str(folder))
    return str(folder)


@pytest.fixture
def style_file(tmp_path):
    path = tmp_path / "style.png"
    Image.fromarray(random_image(50, 40, seed=99)).save(path)
    return str(path)


@pytest.fixture(scope="session")
def model(saved_model_path):
    """The transform net of ``saved_model_path``, loaded once."""
    from kstyle.transform_net import load_transform_net

    return load_transform_net(saved_model_path)


def randomize_norms(net, seed=0):
    """``net`` with random instance-norm scales and offsets, so every layer matters (returns
    ``net``, changed in place)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights(
                [gamma + rng.uniform(0, 1, gamma.shape), rng.normal(0, 0.3, beta.shape)]
            )
    return net


def with_old_output(net):
    """A model of ``net``'s layers (shared, so the same weights) whose output is the older
    ``TanhToPixels`` layer in place of the built-in tanh and rescalings, as nets saved before
    the built-in output were built."""
    import keras

    from kstyle.graph import Graph, output_tanh
    from kstyle.transform_net import TanhToPixels

    graph = Graph(net)
    pre_tanh = graph.producer(output_tanh(graph).inputs[0]).layer.output
    outputs = TanhToPixels(name="to_pixels", dtype="float32")(pre_tanh)
    return keras.Model(net.inputs, outputs, name=net.name)


def renamed(net):
    """A copy of ``net`` (same weights) in which every layer has a new, meaningless name."""
    import keras

    names = {layer.name: f"layer_{index:03d}" for index, layer in enumerate(net.layers)}

    def clone(layer):
        config = {**layer.get_config(), "name": names[layer.name]}
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(net, clone_function=clone)
    copy.set_weights(net.get_weights())
    return copy


VARIANTS = ("seed", "renamed", "slim3", "reflect", "tiny", "tiny_reflect", "live", "live_reflect")
# the instance norms of each variant, counted by hand: 3 down, 2 per residual block, 2 up (live:
# stem, down, 2 per block of 4, up)
VARIANT_NORMS = dict(
    seed=15, renamed=15, slim3=11, reflect=15, tiny=11, tiny_reflect=11, live=11, live_reflect=11
)


def build_variant(kind, seed=0):
    """One of the nets every graph pass is tested on: ``seed`` (the reference net),
    ``renamed`` (the same with every layer renamed), ``slim3`` (the ``slim`` preset with 3
    residual blocks: half the channels), ``reflect`` (reflect padding), the ``tiny`` preset
    (depthwise-separable convolutions), ``tiny_reflect``, the ``live`` preset (stride-4 stem,
    body at 1/8, pixel-shuffle output) and ``live_reflect``; random norm parameters."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(seed)
    options = {
        "slim3": dict(arch="slim", num_residual_blocks=3),
        "reflect": dict(padding="reflect"),
        "tiny": dict(arch="tiny"),
        "tiny_reflect": dict(arch="tiny", padding="reflect"),
        "live": dict(arch="live"),
        "live_reflect": dict(arch="live", padding="reflect"),
    }
    net = randomize_norms(build_transform_net(**options.get(kind, {})), seed)
    return renamed(net) if kind == "renamed" else net


@pytest.fixture(scope="session", params=VARIANTS)
def variant_net(request):
    """Each of :data:`VARIANTS` in turn (built once per session)."""
    return build_variant(request.param)


@pytest.fixture(scope="session", params=("johnson", "slim", "tiny", "live"))
def preset_net(request):
    """Each preset of :func:`kstyle.transform_net.build_transform_net` in turn (the names are
    written here, not read from kstyle, so that a preset dropped there fails), untrained with
    random norm parameters; built once per session."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(4)
    return randomize_norms(build_transform_net(arch=request.param), seed=4)


@pytest.fixture(scope="session")
def export_run(tmp_path_factory):
    """A run directory (``export_run / "run"``) whose seed net trained a few steps offline, so
    that its activations are realistic enough for the export bars."""
    return train_offline(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """As :func:`export_run`, for the ``tiny`` preset (``--arch tiny``: depthwise-separable
    convolutions; ``slim`` has the seed's layer types, which ``export_run`` covers)."""
    return train_offline(tmp_path_factory.mktemp("export_tiny"), "tiny")


@pytest.fixture(scope="session")
def live_run(tmp_path_factory):
    """As :func:`export_run`, for the ``live`` preset (stride-4 stem, pixel-shuffle output)."""
    return train_offline(tmp_path_factory.mktemp("export_live"), "live")


def train_offline(base, arch="johnson"):
    """Trains ``arch`` a few steps offline (random VGG, 32 px) into ``base / "run"``; returns
    ``base``."""
    from kstyle.run import TrainConfig, train

    data = base / "data"
    write_image_folder(str(data), count=8, size=(48, 48))
    style = base / "style.png"
    Image.fromarray(random_image(48, 48, seed=77)).save(style)
    train(
        TrainConfig(
            style=str(style),
            data=str(data),
            output=str(base / "run"),
            image_size=32,
            batch_size=2,
            steps=6,
            vgg_weights="random",
            arch=arch,
            plot_every=0,
            seed=TRAIN_SEED,
            verbose=0,
        ),
        printer=lambda *_: None,
    )
    return base


@pytest.fixture(scope="session")
def export_net(export_run):
    """The transform net of ``export_run``."""
    from kstyle.transform_net import load_transform_net

    return load_transform_net(str(export_run / "run"))


class Bars:
    """Numeric bars that depend on CPU kernels: each check asserts, and under
    ``KSTYLE_RECORD_BARS=FILE`` also appends ``{"test", "quantity", "value", "bar", "kind"}``
    as one JSON line to FILE, so that bench/bar_margins.py can tabulate each bar's measured
    margin on each CPU path (the bar stays written in the test, never read from kstyle)."""

    def __init__(self, test):
        self.test = test

    def _record(self, quantity, value, bar, kind):
        path = os.environ.get("KSTYLE_RECORD_BARS")
        if path:
            import json

            line = {"test": self.test, "quantity": quantity, "value": float(value)}
            line.update(bar=bar, kind=kind)
            with open(path, "a") as file:  # one short append per line: safe across workers
                file.write(json.dumps(line) + "\n")

    def at_least(self, quantity, value, bar):
        """Asserts ``value >= bar`` (e.g. a PSNR in dB)."""
        self._record(quantity, value, bar, ">=")
        assert value >= bar, f"{quantity}: {value} < {bar}"

    def at_most(self, quantity, value, bar):
        """Asserts ``value <= bar`` (e.g. a largest difference in uint8 levels)."""
        self._record(quantity, value, bar, "<=")
        assert value <= bar, f"{quantity}: {value} > {bar}"

    def close(self, quantity, actual, desired, rtol, atol):
        """As ``np.testing.assert_allclose(actual, desired, rtol, atol)``; records the largest
        ``|actual - desired| / (atol + rtol * |desired|)`` against its bar 1 (the share of the
        tolerance used)."""
        actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
        assert actual.shape == desired.shape, (quantity, actual.shape, desired.shape)
        used = np.abs(actual - desired) / (atol + rtol * np.abs(desired))
        self.at_most(f"{quantity} (share of rtol {rtol:g}, atol {atol:g})", used.max(), 1.0)


@pytest.fixture
def bars(request):
    """A :class:`Bars` for the calling test."""
    return Bars(request.node.nodeid)


def max_level_diff(a, b) -> int:
    """The largest absolute difference of two uint8 images of one shape, in levels.

    The tests' bar of 1 level for "the same function" (other kernels, fused or not, another
    runtime): float rounding moves the two results apart by a tiny amount, and wherever a
    value sits at a .5 boundary, rounding to uint8 turns that into 1 level; so 1 is the bound,
    not a tolerance with room. Measured 0 or 1 on every CPU path (bench/bar_margins.py,
    docs/performance.md#numeric-bars); a wrong layer is off by many levels."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape, (a.dtype, a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def tensorboard_scalars(log_dir):
    """``{tag: [(step, value), ...]}`` of every scalar in the event files under ``log_dir``,
    read back through TensorFlow's public event reader, sorted by step."""
    import tensorflow as tf

    scalars = {}
    for step, value in _tensorboard_values(log_dir, "scalars"):
        number = float(tf.make_ndarray(value.tensor))
        scalars.setdefault(value.tag, []).append((step, number))
    return {tag: sorted(points) for tag, points in scalars.items()}


def tensorboard_images(log_dir):
    """``{tag: [(step, (H, W, 3) uint8 array), ...]}`` of every image summary under
    ``log_dir`` (each decoded from its PNG), sorted by step."""
    import tensorflow as tf

    images = {}
    for step, value in _tensorboard_values(log_dir, "images"):
        width, height, encoded = tf.make_ndarray(value.tensor)  # one image per summary
        picture = tf.io.decode_png(encoded).numpy()
        assert picture.shape[:2] == (int(height), int(width)), (picture.shape, width, height)
        images.setdefault(value.tag, []).append((step, picture))
    return {tag: sorted(points, key=lambda point: point[0]) for tag, points in images.items()}


def _tensorboard_values(log_dir, plugin):
    """``(step, summary value)`` of every value of the TensorBoard ``plugin`` ("scalars",
    "images") in the event files under ``log_dir``."""
    import glob

    import tensorflow as tf

    for path in sorted(glob.glob(os.path.join(str(log_dir), "**", "*tfevents*"), recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    yield event.step, value


def raises_within(seconds, function):
    """The exception that ``function()`` raises, or None if it returns; it runs in a daemon
    thread that must end within ``seconds``, so that a hang fails the test, not the suite."""
    import threading

    outcome = {}

    def target():
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    return outcome.get("error")


def checkpoint_step(run_dir):
    """The step of the newest checkpoint in ``run_dir/checkpoints`` (0: none yet)."""
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    if not os.path.exists(index):
        return 0
    with open(index) as file:
        first = file.readline()  # model_checkpoint_path: "ckpt-N"
    return int(first.strip().strip('"').rsplit("-", 1)[-1]) if "ckpt-" in first else 0


def kill_after_checkpoint(args, run_dir, at_least):
    """Starts ``args``, SIGKILLs it once a checkpoint of step >= ``at_least`` exists."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while checkpoint_step(run_dir) < at_least:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return checkpoint_step(run_dir)


def require_or_skip(condition, reason):
    """Skips the calling test with ``reason`` unless ``condition``; under
    ``KSTYLE_REQUIRE_BROWSER=1`` (CI) it fails instead, so that CI cannot pass with the web
    page's tests skipped."""
    if not condition:
        if os.environ.get("KSTYLE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"KSTYLE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def require_web_runtime():
    """Skips (fails in CI) unless the web runtime is vendored into kstyle/web/runtime/."""
    from kstyle.errors import KstyleError
    from kstyle.export.web import runtime_record

    try:
        runtime_record()
    except KstyleError as error:
        require_or_skip(False, str(error))
