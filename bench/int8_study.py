"""Where int8 TFLite loses fidelity, and what wins it back (a benchmark, not a test).

    python bench/int8_study.py [--model MODEL_OR_RUN_DIR] [--calibration 100] [--size 256]
        [--approaches baseline,equalized,...] [--debug-layers 12] [--seed 0] [--latency 256,512]

Without ``--model`` it first trains a net for a few steps offline (random-weight VGG, 64 px
images made from matplotlib's second sample photo), as the export tests do. The
calibration set is procedurally drawn images (gradients, shapes, stripes, noise) plus crops of
that second photo; the held-out portrait of ``kstyle.export.verify.held_out_image`` is never in it.
For each approach it prints the PSNR (uint8 output against the Keras model) on the held-out
portrait at ``--size``, and the conversion time. ``--debug-layers N`` also runs TFLite's
QuantizationDebugger on the baseline and the equalized model and prints the N tensors with the
largest RMSE / scale, next to how many int8 levels the narrowest channels of each pre-norm
convolution output get.
"""

import argparse
import csv
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUT_FLOAT = dict(float_convs=("out_conv",), float_ops="+TANH")
RES_A = tuple(f"res{index}_a_conv" for index in range(1, 6))
APPROACHES = {
    # name: keyword arguments of bench/int8_variants.py's variant_flatbuffer (tanh_clip=None:
    # the output convolution's int8 range is the calibrated one, as before the pre-tanh clip)
    "all_int8": dict(equalize=False, float_ops=(), tanh_clip=None),
    "baseline": dict(equalize=False, tanh_clip=None),
    "baseline_relu_float": dict(equalize=False, float_ops="+RELU", tanh_clip=None),
    "equalized": dict(equalize=True, by="range", tanh_clip=None),
    "equalized_relu_float": dict(equalize=True, by="range", float_ops="+RELU", tanh_clip=None),
    "equalized_stream": dict(equalize=True, by="range", stream_exponent=1.0, tanh_clip=None),
    "equalized_stream_half": dict(equalize=True, by="range", stream_exponent=0.5, tanh_clip=None),
    "equalized_std": dict(equalize=True, by="std", tanh_clip=None),
    "equalized_std_stream": dict(equalize=True, by="std", stream_exponent=1.0, tanh_clip=None),
    "equalized_mixed": dict(equalize=True, by="mixed", tanh_clip=None),
    # the default until the pre-tanh clip
    "equalized_clip": dict(equalize=True, by="clip", tanh_clip=None),
    # the output convolution and the tanh float (denylisted_nodes), or the first one too, or
    # the residual blocks' first convolutions
    "equalized_clip_out_float": dict(equalize=True, by="clip", tanh_clip=None, **OUT_FLOAT),
    "equalized_clip_out_down1_float": dict(
        equalize=True,
        by="clip",
        tanh_clip=None,
        float_ops="+TANH",
        float_convs=("out_conv", "down1_conv"),
    ),
    "equalized_clip_out_res_a_float": dict(
        equalize=True,
        by="clip",
        tanh_clip=None,
        float_ops="+TANH",
        float_convs=("out_conv", *RES_A),
    ),
    # pre-tanh activations clipped to [-4, 4] (every convolution int8)
    "tanh_clip": dict(equalize=False, tanh_clip=4.0),
    "equalized_range_tanh_clip": dict(equalize=True, by="range", tanh_clip=4.0),
    "equalized_stream_tanh_clip": dict(
        equalize=True, by="clip", stream_exponent=1.0, tanh_clip=4.0
    ),
    "equalized_clip_tanh_clip": dict(equalize=True, by="clip", tanh_clip=4.0),  # the int8 default
    "equalized_clip_tanh_clip_res_a_float": dict(
        equalize=True, by="clip", tanh_clip=4.0, float_convs=RES_A
    ),
    "int16x8": dict(equalize=False, activations="int16", tanh_clip=None),
    "int16x8_equalized": dict(equalize=True, by="range", activations="int16", tanh_clip=None),
}


def calibration_images(count, size, seed=0):
    """``count`` uint8 (size, size, 3) images: drawn scenes and crops of the second sample photo
    (never the held-out portrait)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    from kstyle.demo import sample_photo_paths

    rng = np.random.default_rng(seed)
    with Image.open(sample_photo_paths()[1]) as photo:
        photo = photo.convert("RGB")
    images = []
    for index in range(count):
        if index % 2 == 0:
            width, height = photo.size
            crop = int(min(width, height) * rng.uniform(0.3, 1.0))
            left = int(rng.integers(0, width - crop + 1))
            top = int(rng.integers(0, height - crop + 1))
            image = photo.crop((left, top, left + crop, top + crop))
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        else:
            y, x = np.mgrid[0:size, 0:size] / size
            base = np.stack(
                [rng.uniform(0, 255) * (1 - x) + rng.uniform(0, 255) * x for _ in range(2)]
                + [rng.uniform(0, 255) * (1 - y) + rng.uniform(0, 255) * y],
                axis=-1,
            )
            image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(3, 12))):
                box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
                xy = [box[0][0], box[1][0], box[0][1] + 2, box[1][1] + 2]
                fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                shape = rng.integers(0, 3)
                if shape == 0:
                    draw.ellipse(xy, fill=fill)
                elif shape == 1:
                    draw.rectangle(xy, fill=fill)
                else:
                    draw.line(xy, fill=fill, width=int(rng.integers(1, 8)))
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))
            noisy = np.asarray(image, np.float64) + rng.normal(
                0, rng.uniform(0, 12), (size, size, 3)
            )
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        images.append(np.asarray(image, dtype=np.uint8))
    return images


def train_model(directory, steps, image_size, seed=0):
    """A run directory whose net trained ``steps`` steps offline (initial weights and batches
    drawn from ``seed``); returns its path."""
    from kstyle.run import TrainConfig, train

    data = os.path.join(directory, "data")
    os.makedirs(data, exist_ok=True)
    for index, image in enumerate(calibration_images(16, 96, seed=1000)):
        from PIL import Image

        Image.fromarray(image).save(os.path.join(data, f"{index:02d}.png"))
    style = os.path.join(directory, "style.png")
    from kstyle.demo import make_style_image

    make_style_image(style)
    run = os.path.join(directory, "run")
    train(
        TrainConfig(
            style=style,
            data=data,
            output=run,
            image_size=image_size,
            batch_size=2,
            steps=steps,
            vgg_weights="random",
            plot_every=0,
            seed=seed,
            verbose=0,
        ),
        printer=lambda *_: None,
    )
    return run


def convert(net, images, float_ops=None, **options):
    from int8_variants import variant_flatbuffer  # bench/

    from kstyle.export.int8 import INT8_FLOAT_OPS

    if float_ops is None:
        float_ops = INT8_FLOAT_OPS
    elif isinstance(float_ops, str) and float_ops.startswith("+"):
        float_ops = (*INT8_FLOAT_OPS, float_ops[1:])
    return variant_flatbuffer(net, images, float_ops=float_ops, **options)


def measure(net, flatbuffer, image, reference):
    from kstyle.export import Runner
    from kstyle.images import psnr

    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(flatbuffer)
        file.flush()
        output = Runner("tflite", file.name)(image)
    return psnr(output, reference), int(abs(output.astype(int) - reference).max())


def latencies(flatbuffers, sizes, repeats=5, threads=2):
    """{name: {size: median seconds}} of each TFLite flatbuffer on the held-out portrait,
    the runs of all models interleaved so that a busy machine slows them alike."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from kstyle.export.verify import held_out_image

    timings = {name: {} for name in flatbuffers}
    for size in sizes:
        batch = held_out_image(size, size)[None]
        interpreters = {}
        for name, flatbuffer in flatbuffers.items():
            interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], batch.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], batch)
            interpreter.invoke()  # warm-up
            interpreters[name] = interpreter
        samples = {name: [] for name in flatbuffers}
        for _ in range(repeats):
            for name, interpreter in interpreters.items():
                start = time.perf_counter()
                interpreter.invoke()
                samples[name].append(time.perf_counter() - start)
        for name in flatbuffers:
            timings[name][size] = float(np.median(samples[name]))
    return timings


def debugger_report(net, images, equalize, rows):
    """Per-tensor statistics of TFLite's QuantizationDebugger (norm ops float)."""
    import tensorflow as tf

    from kstyle.export import serving_archive
    from kstyle.export.int8 import INT8_FLOAT_OPS, equalized_export_model

    model = equalized_export_model(net, images, None, 1) if equalize else None
    with tempfile.TemporaryDirectory() as directory:
        serving_archive(net, directory, batch_size=1, model=model)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([image[None]] for image in images[:4]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(INT8_FLOAT_OPS)
            ),
        )
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    table = list(csv.DictReader(io.StringIO(dump.getvalue())))
    for row in table:
        scale = float(row["scale"] or 0) or float("nan")
        row["rmse/scale"] = float(row["mean_squared_error"]) ** 0.5 / scale
    table.sort(key=lambda row: -row["rmse/scale"])
    print(f"\nQuantizationDebugger, {'equalized' if equalize else 'baseline'}: top {rows} tensors")
    print(f"{'op':<22} {'tensor':<58} {'scale':>9} {'RMSE/scale':>10}")
    for row in table[:rows]:
        name = row["tensor_name"][-58:]
        print(
            f"{row['op_name']:<22} {name:<58} {float(row['scale']):9.4f} {row['rmse/scale']:10.3f}"
        )


def level_report(net, images):
    """For each conv feeding an instance norm: how many int8 levels a per-tensor scale leaves
    the typical per-image standard deviation of its narrowest channels."""
    import keras
    import numpy as np

    from kstyle.export.int8 import norm_convs
    from kstyle.export.serving import PadToMultiple, export_layer
    from kstyle.graph import Graph

    clone = keras.models.clone_model(net, clone_function=export_layer)
    clone.set_weights(net.get_weights())
    graph = Graph(clone)
    convs = list(norm_convs(graph).values())
    pad = PadToMultiple()
    lows = [np.inf] * len(convs)
    highs = [-np.inf] * len(convs)
    stds = [[] for _ in convs]
    for image in images:
        outputs = graph.evaluate({graph.inputs[0]: pad(image[None])}, [c.output for c in convs])
        for index, output in enumerate(outputs):
            output = np.asarray(output)[0]
            lows[index] = min(lows[index], output.min())
            highs[index] = max(highs[index], output.max())
            stds[index].append(output.std(axis=(0, 1)))
    print("\nPre-norm conv outputs: int8 step (per-tensor range / 255) vs per-channel std")
    print(
        f"{'conv':<14} {'range':>18} {'step':>8} {'std p5':>8} {'std med':>8} {'levels/std p5':>13}"
    )
    for conv, low, high, std in zip(convs, lows, highs, stds, strict=True):
        std = np.median(np.stack(std), axis=0)
        step = (high - low) / 255
        p5, median = np.percentile(std, 5), np.median(std)
        print(
            f"{conv.name:<14} [{low:8.2f}, {high:7.2f}] {step:8.4f} {p5:8.4f} {median:8.4f} "
            f"{p5 / step:13.2f}"
        )


def main(argv=None):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model.keras or run dir; default: train")
    parser.add_argument("--steps", type=int, default=20, help="training steps without --model")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="training seed without --model")
    parser.add_argument("--save-model", default=None, help="also save the trained net here")
    parser.add_argument("--calibration", type=int, default=100, help="calibration images")
    parser.add_argument("--size", type=int, default=256, help="calibration and test size")
    parser.add_argument("--approaches", default=",".join(APPROACHES))
    parser.add_argument("--debug-layers", type=int, default=0)
    parser.add_argument(
        "--latency",
        default="",
        help="comma-separated sizes (e.g. 256,512): also time each approach against fp32 TFLite",
    )
    args = parser.parse_args(argv)

    import keras

    from kstyle.export.verify import held_out_image
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net

    keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        model_path = args.model or train_model(directory, args.steps, args.train_size, args.seed)
        net = load_transform_net(model_path)
        if not args.model:
            print(
                f"trained {args.steps} steps at {args.train_size} px (seed {args.seed}) in "
                f"{time.perf_counter() - start:.0f} s"
            )
        if args.save_model:
            net.save(args.save_model)
    images = calibration_images(args.calibration, args.size)
    image = held_out_image(args.size, args.size)
    reference = stylize_array(net, image)
    if args.debug_layers:
        level_report(net, images[:16])
        for equalize in (False, True):
            debugger_report(net, images[:16], equalize, args.debug_layers)
    print(
        f"\n{args.calibration} calibration images at {args.size}², held-out portrait {args.size}²"
    )
    print("| approach | PSNR (dB) | max abs diff | conversion (s) |\n|---|---|---|---|")
    flatbuffers = {}
    for name in args.approaches.split(","):
        start = time.perf_counter()
        try:
            flatbuffer = convert(net, images, **APPROACHES[name])
        except Exception as error:  # noqa: BLE001  (report and go on to the next approach)
            print(f"| {name} | failed: {str(error).splitlines()[0][:200]} | | |")
            continue
        seconds = time.perf_counter() - start
        quality, max_abs = measure(net, flatbuffer, image, reference)
        print(f"| {name} | {quality:.1f} | {max_abs} | {seconds:.0f} |", flush=True)
        flatbuffers[name] = flatbuffer
    if args.latency:
        from kstyle.export import tflite_bytes

        sizes = [int(size) for size in args.latency.split(",")]
        timings = latencies({"fp32": tflite_bytes(net, "none"), **flatbuffers}, sizes)
        print("\nlatency, median of 5 (interleaved), and speed-up over fp32 TFLite")
        print("| approach | " + " | ".join(f"{size}² ms | ×" for size in sizes) + " |")
        print("|---|" + "---|---|" * len(sizes))
        for name, row in timings.items():
            cells = [f"{row[s] * 1000:.0f} | {timings['fp32'][s] / row[s]:.2f}" for s in sizes]
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
