import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import keras
from conftest import random_image, randomize_norms

from kstyle import stylize_array
from kstyle.export import export
from kstyle.transform_net import build_transform_net

out = "/tmp/webbench"  # the harness (README.md) serves this folder
os.makedirs(out, exist_ok=True)
image = random_image(256, 256, seed=7)
image.tofile(f"{out}/input.rgb")
for arch in ("tiny", "slim", "johnson"):
    keras.utils.set_random_seed(4)
    net = randomize_norms(build_transform_net(arch=arch), seed=4)
    run = f"{out}/{arch}"
    os.makedirs(run, exist_ok=True)
    net.save(f"{run}/model.keras")
    export(f"{run}/model.keras", f"{run}/dyn", formats=("onnx",))
    export(f"{run}/model.keras", f"{run}/fixed", formats=("tflite", "onnx"), input_size=256)
    stylize_array(net, image).tofile(f"{run}/ref256.rgb")
