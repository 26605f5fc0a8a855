"""A default ``model.keras`` opens in plain Keras, on each installed backend, in a process that
never imports kstyle, and stylizes as kstyle does; a reflect-padding file needs kstyle."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import max_level_diff, random_image, randomize_norms

from kstyle.callbacks import save_model_atomically
from kstyle.inference import stylize_array
from kstyle.smoke import SMOKE_TEST_NOTE
from kstyle.transform_net import build_transform_net, load_transform_net

# Runs in a fresh interpreter: loads argv[1] with plain Keras, stylizes argv[2] (a uint8 .npy
# image whose sides are multiples of 4) and saves the rounded pixels to argv[3].
PLAIN_KERAS = """
import sys
import keras
import numpy as np

model = keras.saving.load_model(sys.argv[1])
image = np.load(sys.argv[2])
styled = model.predict(image[None].astype("float32"), verbose=0)[0]
np.save(sys.argv[3], np.clip(np.round(styled), 0, 255).astype(np.uint8))
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "kstyle")
assert not loaded, loaded
print("backend", keras.backend.backend())
"""


def _plain_keras(script, *args, backend="tensorflow", cwd):
    """Runs ``script`` in a new Python with ``KERAS_BACKEND=backend``, the working directory
    ``cwd`` (not the repository) and no PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A default seed net with random norm parameters saved as model.keras (as a run saves
    it: with kstyle.smoke's mark, which plain Keras must ignore), a 40 x 48 image and
    kstyle's stylization of it."""
    folder = tmp_path_factory.mktemp("model_file")
    keras.utils.set_random_seed(6)
    path = folder / "model.keras"
    net = randomize_norms(build_transform_net(), seed=6)
    save_model_atomically(net, str(path), marks={"smoke_test": True, "note": SMOKE_TEST_NOTE})
    image = random_image(40, 48, seed=8)
    np.save(folder / "image.npy", image)
    expected = stylize_array(load_transform_net(str(path)), image)
    assert expected.std() > 5  # not a flat image
    return folder, expected


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_plain_keras_loads_and_stylizes_without_kstyle(model_file, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"the {backend} backend is not installed (pip install {backend})")
    folder, expected = model_file
    output = folder / f"styled_{backend}.npy"
    result = _plain_keras(
        PLAIN_KERAS,
        folder / "model.keras",
        folder / "image.npy",
        output,
        backend=backend,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend {backend}" in result.stdout
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    assert max_level_diff(np.load(output), expected) <= 1


def test_a_reflect_padding_file_needs_kstyles_layer(tmp_path):
    """Reflect padding is kstyle's ReflectionPadding2D: plain Keras cannot load that file
    (Keras names the unknown layer), and can once ``kstyle.transform_net`` is imported."""
    keras.utils.set_random_seed(7)
    net = randomize_norms(build_transform_net(padding="reflect"), seed=7)
    net.save(tmp_path / "reflect.keras")
    image = random_image(32, 36, seed=2)
    np.save(tmp_path / "image.npy", image)
    args = (tmp_path / "reflect.keras", tmp_path / "image.npy", tmp_path / "styled.npy")
    without = _plain_keras(PLAIN_KERAS, *args, cwd=tmp_path)
    assert without.returncode != 0
    assert "Could not locate class 'ReflectionPadding2D'" in without.stderr, without.stderr[-3000:]
    with_kstyle = _plain_keras(
        # ``import kstyle`` alone loads nothing (its names load on use): the layer's module
        "import kstyle.transform_net\n" + PLAIN_KERAS.replace("assert not loaded", "assert loaded"),
        *args,
        cwd=tmp_path,
    )
    assert with_kstyle.returncode == 0, with_kstyle.stderr[-3000:]
    # 1 level: float rounding at a .5 boundary (conftest.max_level_diff)
    assert max_level_diff(np.load(args[2]), stylize_array(net, image)) <= 1
