"""The video path of an older commit against today's, on the same clip and net, in turn (a
benchmark, not a test): the old ``kstyle/video.py`` (``git show COMMIT:kstyle/video.py``) is
imported beside today's kstyle, so only the video pipeline differs.

    python bench/video_old_vs_new.py CLIP MODEL.keras --commit c1eeeee --rounds 2

Each run is a fresh process with 2 TensorFlow threads, after a warm-up call at the clip's size;
it prints ``stylize_video``'s line, the 1-minute load average before / after and the output's
size.
"""

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = """
import os, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
from kstyle.inference import stylize_array
from kstyle.transform_net import load_transform_net
from kstyle.video_io import probe_clip
if sys.argv[1] == "old":
    sys.path.insert(0, sys.argv[4])
    from old_video import stylize_video
else:
    from kstyle.video import stylize_video
clip, target = sys.argv[2], sys.argv[3]
model = load_transform_net(sys.argv[5])
info = probe_clip(clip)
stylize_array(model, np.zeros((info.height, info.width, 3), np.uint8))
load = os.getloadavg()[0]
speed = stylize_video(model, clip, target, progress=False)
print(f"{sys.argv[1]}: {speed.message()}; load {load:.2f} / {os.getloadavg()[0]:.2f}; "
      f"{os.path.getsize(target)} bytes")
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip")
    parser.add_argument("model")
    parser.add_argument("--commit", default="c1eeeee", help="the older commit")
    parser.add_argument("--rounds", type=int, default=2, help="old, new pairs")
    args = parser.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    with tempfile.TemporaryDirectory() as directory:
        old = subprocess.run(
            ["git", "show", f"{args.commit}:kstyle/video.py"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        with open(os.path.join(directory, "old_video.py"), "w") as file:
            file.write(old)
        for _ in range(args.rounds):
            for which in ("old", "new"):
                target = os.path.join(directory, f"{which}.mp4")
                command = [sys.executable, "-c", RUN, which, args.clip, target, directory]
                result = subprocess.run(
                    [*command, args.model], env=env, capture_output=True, text=True, check=True
                )
                print(result.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
