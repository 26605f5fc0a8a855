"""Shared fixtures. Everything is offline: untrained VGG-16 (weights=None), tiny images."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


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
