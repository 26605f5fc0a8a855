"""The harness's models (README.md): per preset an untrained net with random norm parameters,
its dynamic-shape ONNX export (``dyn/``), a fixed-size fp32 TFLite file per size
(``fixed-WxH/``, what LiteRT.js needs) and ``stylize_array``'s output per size as the
reference; one random input per size.

    PYTHONPATH=$PWD python bench/web_runtimes/make_models.py [ARCHES] [SIZES]
    PYTHONPATH=$PWD python bench/web_runtimes/make_models.py tiny,live 256x256,640x480
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import keras
from conftest import random_image, randomize_norms

from kstyle import stylize_array
from kstyle.export import export
from kstyle.export.serving import plain_tflite_bytes
from kstyle.transform_net import build_transform_net

out = "/tmp/webbench"  # the harness (README.md) serves this folder
arches = (sys.argv[1] if len(sys.argv) > 1 else "tiny,slim,johnson").split(",")
sizes = (sys.argv[2] if len(sys.argv) > 2 else "256x256").split(",")
os.makedirs(out, exist_ok=True)
images = {}
for size in sizes:
    width, height = map(int, size.split("x"))
    images[size] = random_image(height, width, seed=7)
    images[size].tofile(f"{out}/input-{size}.rgb")
for arch in arches:
    keras.utils.set_random_seed(4)
    net = randomize_norms(build_transform_net(arch=arch), seed=4)
    run = f"{out}/{arch}"
    os.makedirs(run, exist_ok=True)
    net.save(f"{run}/model.keras")
    export(f"{run}/model.keras", f"{run}/dyn", formats=("onnx",))
    for size, image in images.items():
        os.makedirs(f"{run}/fixed-{size}", exist_ok=True)
        with open(f"{run}/fixed-{size}/model.tflite", "wb") as file:
            file.write(plain_tflite_bytes(net, "none", image.shape[:2]))
        stylize_array(net, image).tofile(f"{run}/ref-{size}.rgb")
