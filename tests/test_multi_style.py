"""Many styles in one network: conditional instance norm, style vectors and blends, training N
styles at once, adding a style to a trained net (issue 22). Nets are untrained with random
style tables, images 32 px; one 3-style run and one add-style run (random VGG-16) are shared
by the run-level tests."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from conftest import random_image, run_in_process, tensorboard_scalars, write_image_folder
from PIL import Image

from kstyle.errors import KstyleError

PRESETS = ("johnson", "slim", "tiny", "live")


def random_tables(net, seed=0):
    """``net`` (a net of N styles) with random, distinct rows in every style table."""
    from kstyle.style_tables import style_tables

    rng = np.random.default_rng(seed)
    for scale, offset in style_tables(net).values():
        scale.kernel.assign(rng.uniform(0.5, 1.5, scale.kernel.shape).astype(np.float32))
        offset.kernel.assign(rng.normal(0, 0.3, offset.kernel.shape).astype(np.float32))
    return net


def multi_net(arch="tiny", styles=3, seed=0, padding="zeros"):
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(seed)
    net = build_transform_net(arch, padding=padding, num_styles=styles)
    return random_tables(net, seed)


def net_with_rows(source, arch, rows_of, padding="zeros"):
    """A net of the same preset with one conditional row per table (N = 1): ``source``'s
    convolutions, and in each table the row ``rows_of(table kernel)`` (C,)."""
    from kstyle.norms import ConditionalInstanceNorm
    from kstyle.style_tables import style_tables
    from kstyle.transform_net import build_transform_net

    target = build_transform_net(arch, padding=padding, normalizer=ConditionalInstanceNorm(1))
    tables = {table.name for pair in style_tables(source).values() for table in pair}
    for layer in source.layers:
        weights = layer.get_weights()
        if layer.name in tables:
            weights = [np.asarray(rows_of(weights[0]), np.float32)[None]]
        target.get_layer(layer.name).set_weights(weights)
    return target


def batch(count=2, size=32, seed=0):
    pictures = [random_image(size, size, seed=seed + i) for i in range(count)]
    return np.stack(pictures).astype(np.float32)


def with_style(net, content, vector):
    vectors = np.repeat(np.asarray(vector, np.float32)[None], len(content), axis=0)
    return net.predict([content, vectors], verbose=0)


def test_one_style_is_the_seed_net_and_n_styles_add_only_the_tables():
    from kstyle.transform_net import build_transform_net

    seed = build_transform_net()
    assert seed.count_params() == 1_679_235 and len(seed.inputs) == 1
    channels = 32 + 64 + 128 + 10 * 128 + 64 + 32  # every instance norm's, counted by hand
    for count in (2, 16):
        net = build_transform_net(num_styles=count)
        # each norm's γ and β become (N, C) tables; the convolutions are shared
        assert net.count_params() == 1_679_235 + (count - 1) * 2 * channels
        assert [tuple(t.shape) for t in net.inputs] == [(None, None, None, 3), (None, count)]
        # built-in Keras layers only: model.keras opens without kstyle
        assert {type(layer).__module__.split(".")[0] for layer in net.layers} == {"keras"}


@pytest.mark.parametrize("arch", PRESETS)
def test_a_one_hot_vector_is_exactly_the_net_that_holds_that_row(arch):
    net = multi_net(arch, styles=3)
    content = batch()
    for k in range(3):
        holder = net_with_rows(net, arch, lambda table, k=k: table[k])
        expected = with_style(holder, content, [1.0])
        np.testing.assert_array_equal(with_style(net, content, np.eye(3)[k]), expected)
    # the rows differ, so the styles do
    first, second = (with_style(net, content, np.eye(3)[k]) for k in (0, 1))
    assert np.abs(first - second).max() > 1.0


def test_a_blend_is_the_net_whose_rows_are_blended():
    net = multi_net("tiny", styles=3, seed=1)
    content = batch(seed=5)
    # halves: every product is exact and the sum rounds once, in any order: bit for bit
    holder = net_with_rows(net, "tiny", lambda table: 0.5 * table[0] + 0.5 * table[2])
    np.testing.assert_array_equal(
        with_style(net, content, [0.5, 0.0, 0.5]), with_style(holder, content, [1.0])
    )
    weights = np.array([0.2, 0.3, 0.5], np.float32)
    holder = net_with_rows(net, "tiny", lambda table: weights @ table)
    np.testing.assert_allclose(
        with_style(net, content, weights), with_style(holder, content, [1.0]), atol=1e-3
    )


@pytest.mark.parametrize("arch,padding", [(a, "zeros") for a in PRESETS] + [("tiny", "reflect")])
def test_a_style_baked_into_a_plain_net_gives_the_same_pictures(arch, padding):
    import keras

    from kstyle.style_tables import style_tables
    from kstyle.styles import bake_style
    from kstyle.transform_net import build_transform_net

    net = multi_net(arch, styles=3, seed=2, padding=padding)
    content = batch(seed=9)
    for style, vector in ((1, np.eye(3)[1]), ("0:1,2:3", [0.25, 0.0, 0.75])):
        baked = bake_style(net, style)
        assert len(baked.inputs) == 1
        assert baked.count_params() == build_transform_net(arch, padding).count_params()
        assert not any(isinstance(layer, keras.layers.Dense) for layer in baked.layers)
        norms = [
            layer for layer in baked.layers if isinstance(layer, keras.layers.GroupNormalization)
        ]
        tables = style_tables(net)
        assert sorted(layer.name for layer in norms) == sorted(tables)
        for norm in norms:
            scale, offset = tables[norm.name]
            expected = np.asarray(vector, np.float32) @ scale.kernel.numpy()
            np.testing.assert_allclose(norm.gamma.numpy(), expected, rtol=1e-6)
        # the affine in GroupNormalization's order: equal to float32 rounding, in 0..255
        np.testing.assert_allclose(
            baked.predict(content, verbose=0), with_style(net, content, vector), atol=2e-3
        )


@pytest.mark.parametrize(
    "style,expected",
    [
        (None, [1, 0, 0]),
        (2, [0, 0, 1]),
        ("1", [0, 1, 0]),
        ("0:0.5, 2:0.5", [0.5, 0, 0.5]),
        ("0:1,2:3", [0.25, 0, 0.75]),  # normalized to sum 1
        ([0, 2, 2], [0, 0.5, 0.5]),
        ("0:1e308,1:1e308", [0.5, 0.5, 0]),  # no overflow
    ],
)
def test_style_vectors(style, expected):
    from kstyle.styles import style_vector

    np.testing.assert_allclose(style_vector(style, 3), expected)


@pytest.mark.parametrize(
    "style,message",
    [
        (3, "style 3 does not exist: this network has 3 style(s), 0 to 2"),
        ("0:0.5,5:0.5", "style 5 does not exist"),
        (-1, "must not be negative"),
        ("0:-0.5,1:1", "must be finite and not negative"),
        ("0:0,1:0", "sum to 0"),
        ([0.5, 0.5], "a style vector of 2 weight(s) for a network of 3 style(s)"),
        ([1, np.nan, 0], "must be finite"),
        ("wave", "give a style index"),
        ("0:x", "is not a number"),
        ("²", "give a style index"),
        (2.5, "a style index is a whole number"),
        (True, "a style index is a whole number"),
        ("9" * 5000, "does not exist"),
        (2.5, "a style index is a whole number"),
        (True, "a style index is a whole number"),
        ("9" * 5000, "does not exist"),
    ],
)
def test_bad_style_vectors_are_one_line_errors(style, message):
    from kstyle.styles import style_vector

    with pytest.raises(KstyleError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        style_vector(style, 3)
    assert error.value.exit_code == 2 and "\n" not in str(error.value)


def test_stylize_array_takes_a_style_or_a_blend_in_every_path():
    from kstyle.images import to_uint8
    from kstyle.inference import stylize_array, stylize_batch
    from kstyle.styles import bake_style
    from kstyle.transform_net import build_transform_net

    net = multi_net("tiny", styles=3, seed=3)
    image = random_image(40, 52, seed=4)
    for style in (2, "0:0.5,1:0.5"):
        whole = stylize_array(net, image, style=style)
        reference = to_uint8(bake_style(net, style).predict(image[None] * 1.0, verbose=0)[0])
        assert np.abs(whole.astype(int) - reference).max() <= 1  # 40 x 52: no padding
        # exact statistics over tiles: within one level of the whole-image pass
        tiled = stylize_array(net, image, style=style, tile=16)
        assert np.abs(tiled.astype(int) - whole).max() <= 1
        frames = stylize_batch(net, np.stack([image, image[::-1]]), style=style)
        np.testing.assert_array_equal(frames[0], whole)
        colour = stylize_array(net, image, style=style, preserve_colors=True, strength=0.5)
        assert np.abs(colour.astype(int) - whole).max() > 0
    assert np.abs(stylize_array(net, image, style=0).astype(int) - whole).max() > 1
    with pytest.raises(KstyleError, match="style 1 does not exist: this network has 1 style"):
        stylize_array(build_transform_net("tiny"), image, style=1)


def test_the_schedule_draws_each_style_once_a_round_and_resumes_the_same():
    import tensorflow as tf

    from kstyle.multi_style import scheduled_style

    drawn = [3, 4, 5, 6]
    order = [int(scheduled_style(step, drawn, seed=7)) for step in range(40)]
    rounds = [order[i : i + 4] for i in range(0, 40, 4)]
    assert all(sorted(r) == drawn for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not cycled
    assert order != [int(scheduled_style(s, drawn, seed=8)) for s in range(40)]  # the seed's
    # a stream started at step 13 (a resumed run) labels its batches as the whole run did
    from kstyle.multi_style import MultiStyleTransferTrainer

    labels = MultiStyleTransferTrainer.label_stream
    content = tf.data.Dataset.from_tensor_slices(tf.zeros((40, 2, 4, 4, 3))).skip(13)
    fake = type("Fake", (), {"drawn": drawn})()
    resumed = [int(styles[0]) for _, styles in labels(fake, content, 13, 7)]
    assert resumed == order[13:]
    # a pipeline that feeds 2 replicas: each step's 2 batches, one per replica, share a style
    per_replica = [int(styles[0]) for _, styles in labels(fake, content, 13, 7, per_step=2)]
    assert per_replica == [order[13 + i // 2] for i in range(len(per_replica))]


# --- runs -----------------------------------------------------------------------------------

STEPS = 6


def train_args(base, output, *styles, extra=()):
    return [
        *[arg for style in styles for arg in ("--style", style)], "--data", str(base / "data"),
        "--output", str(output), "--vgg-weights", "random", "--image-size", "32",
        "--batch-size", "2", "--steps", str(STEPS), "--plot-every", "3", "--seed", "1",
        "--arch", "tiny", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("styles")
    write_image_folder(str(base / "data"), count=6, size=(36, 40))
    (base / "styles").mkdir()
    for index, name in enumerate(("wave", "scream", "candy")):
        Image.fromarray(random_image(40, 40, seed=70 + index)).save(base / "styles" / f"{name}.png")
    Image.fromarray(random_image(40, 40, seed=90)).save(base / "mosaic.png")
    return base


@pytest.fixture(scope="module")
def three_styles(base):
    run = base / "three"
    result = run_in_process("train.py", *train_args(base, run, str(base / "styles")))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_a_run_of_three_styles_records_them_and_draws_them_by_its_schedule(base, three_styles):
    from kstyle.multi_style import scheduled_style
    from kstyle.smoke import recorded_style_names

    config = json.loads((three_styles / "config.json").read_text())
    names = ["candy", "scream", "wave"]  # the folder's images, sorted
    assert config["style"] == [str(base / "styles")] and config["style_names"] == names
    assert [os.path.basename(path) for path in config["style_files"]] == [
        f"{name}.png" for name in names
    ]
    assert "argsort(stateless_uniform" in config["style_schedule"]
    assert recorded_style_names(str(three_styles / "model.keras")) == names  # in the file too
    with open(three_styles / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    drawn = [int(row["style_index"]) for row in rows]
    assert drawn == [int(scheduled_style(s, [0, 1, 2], config["data_seed"])) for s in range(STEPS)]
    # TensorBoard (every 3 steps): each style's mean style loss over the steps that drew it
    scalars = tensorboard_scalars(three_styles / "logs" / "train")
    losses = [float(row["style"]) for row in rows]
    for index, name in enumerate(names):
        expected = []
        for end in (3, 6):
            mine = [losses[s] for s in range(end - 3, end) if drawn[s] == index]
            expected += [(end, pytest.approx(np.mean(mine), rel=1e-5))] if mine else []
        assert scalars[f"style_loss/{name}"] == expected
    # the preview: a row per style (input | output, 32 px, 8 px apart)
    with Image.open(three_styles / "preview.png") as preview:
        assert preview.size == (32 + 8 + 32, 3 * 32 + 2 * 8)


def test_a_run_of_three_styles_stylizes_each_and_their_blends(base, three_styles, tmp_path):
    from kstyle.cli.info import model_lines
    from kstyle.images import load_image
    from kstyle.inference import stylize_array
    from kstyle.transform_net import load_transform_net

    lines = model_lines(str(three_styles))
    assert lines[1:] == ["style 0: candy", "style 1: scream", "style 2: wave"]
    assert "3 style(s)" in lines[0] and "smoke test" in lines[0]
    photo = base / "data" / "img_00.jpg"
    net = load_transform_net(str(three_styles))
    for style in ("1", "0:0.5,2:0.5"):
        target = tmp_path / f"out{style.replace(':', '_').replace(',', '_')}.png"
        result = run_in_process("stylize.py", photo, "--output", target, "--model", three_styles,
                                "--style", style)  # fmt: skip
        assert result.returncode == 0, result.stderr
        expected = stylize_array(net, load_image(str(photo)), style=style)
        np.testing.assert_array_equal(load_image(str(target)), expected)
    for bad, message in (("3", "style 3 does not exist"), ("0:-1,1:2", "not negative")):
        result = run_in_process("stylize.py", photo, "--output", tmp_path / "bad.png",
                                "--model", three_styles, "--style", bad)  # fmt: skip
        errors = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0]
        assert not (tmp_path / "bad.png").exists()


def test_a_run_of_three_styles_refuses_to_resume_with_other_styles(base, three_styles, tmp_path):
    import dataclasses

    import tensorflow as tf

    from kstyle.config import TrainConfig
    from kstyle.run_dir import previous_run

    saved = json.loads((three_styles / "config.json").read_text())
    run = tmp_path / "run"  # the run as it was before it finished: a checkpoint, no summary
    checkpoint = tf.train.Checkpoint(step=tf.Variable(2))
    tf.train.CheckpointManager(checkpoint, str(run / "checkpoints"), 1).save(checkpoint_number=2)
    (run / "config.json").write_text(json.dumps(saved))
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    same = TrainConfig(**{name: saved[name] for name in fields})
    assert previous_run(str(run), same)["style_names"] == ["candy", "scream", "wave"]
    more = dataclasses.replace(same, style=[*saved["style"], str(base / "mosaic.png")])
    with pytest.raises(KstyleError, match="holds a run started with --style") as error:
        previous_run(str(run), more)
    assert "\n" not in str(error.value)
    # the same --style, but its folder holds another image now
    (base / "styles" / "extra.png").write_bytes((base / "mosaic.png").read_bytes())
    try:
        with pytest.raises(KstyleError, match="started with style_files") as error:
            previous_run(str(run), same)
    finally:
        os.remove(base / "styles" / "extra.png")


def test_a_multi_style_net_exports_with_a_style_input_or_one_style(base, three_styles, tmp_path):
    result = run_in_process("export.py", three_styles, "--output", tmp_path / "all",
                            "--verify-size", "32")  # fmt: skip
    # each format met its bar (1 level) for each style and a blend
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([line for line in result.stdout.splitlines() if line.endswith("] ok")]) == 3
    sidecar = json.loads((tmp_path / "all" / "model.tflite.json").read_text())
    assert sidecar["style_input"]["styles"] == ["candy", "scream", "wave"]
    assert sidecar["style_input"]["shape"] == [1, 3]
    result = run_in_process("export.py", three_styles, "--output", tmp_path / "one",
                            "--format", "onnx", "--style", "0:0.5,2:0.5")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "one" / "model.onnx").is_file()
    sidecar = json.loads((tmp_path / "one" / "model.onnx.json").read_text())
    assert sidecar["style"] == "candy 0.5 + wave 0.5"
    assert sidecar["style_vector"] == [0.5, 0.0, 0.5]
    assert "style_input" not in sidecar


@pytest.fixture(scope="module")
def added(base, three_styles):
    run = base / "added"
    args = train_args(base, run, extra=("--add-style", str(base / "mosaic.png"),
                                         "--from", str(three_styles)))  # fmt: skip
    args = [arg for arg in args if arg != "--arch" and arg != "tiny"]  # the base's preset
    result = run_in_process("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_adding_a_style_trains_only_its_rows(base, three_styles, added):
    from kstyle.style_tables import style_tables
    from kstyle.transform_net import load_transform_net

    old, new = load_transform_net(str(three_styles)), load_transform_net(str(added))
    assert new.count_params() == old.count_params() + 2 * sum(
        scale.kernel.shape[1] for scale, _ in style_tables(old).values()
    )
    old_tables, new_tables = style_tables(old), style_tables(new)
    changed = 0
    for layer in old.layers:
        for mine, theirs in zip(
            layer.get_weights(), new.get_layer(layer.name).get_weights(), strict=True
        ):
            if any(layer is table for pair in old_tables.values() for table in pair):
                np.testing.assert_array_equal(theirs[:3], mine)  # the old rows, bit for bit
                changed += int(np.any(theirs[3] != mine.mean(axis=0)))  # the new row learned
            else:
                np.testing.assert_array_equal(theirs, mine)  # every convolution, bit for bit
    assert changed > 0 and len(new_tables) == len(old_tables)
    content = batch(seed=11)
    for k in range(3):  # every old style's pictures, bit for bit
        np.testing.assert_array_equal(
            with_style(new, content, np.eye(4)[k]), with_style(old, content, np.eye(3)[k])
        )
    config = json.loads((added / "config.json").read_text())
    assert config["style_names"] == ["candy", "scream", "wave", "mosaic"]
    assert config["arch"] == "tiny" and len(config["base_sha256"]) == 64
    with open(added / "history.csv", newline="") as file:
        assert {row["style_index"] for row in csv.DictReader(file)} == {"3"}  # only the new


def test_a_style_added_to_a_one_style_run_keeps_its_pictures(base, tmp_path):
    from kstyle.styles import bake_style
    from kstyle.transform_net import load_transform_net

    one = tmp_path / "one"
    result = run_in_process("train.py", *train_args(base, one, str(base / "mosaic.png")))
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    args = train_args(base, two, extra=("--add-style", str(base / "styles" / "wave.png"),
                                         "--from", str(one)))  # fmt: skip
    result = run_in_process("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    plain, grown = load_transform_net(str(one)), load_transform_net(str(two))
    content = batch(seed=12)
    # the new net's style 0, as stylizing runs it (baked), is the old net bit for bit
    np.testing.assert_array_equal(
        bake_style(grown, 0).predict(content, verbose=0), plain.predict(content, verbose=0)
    )
    assert json.loads((two / "config.json").read_text())["style_names"] == ["mosaic", "wave"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--add-style", "x.png"), "--add-style needs --from"),
        (("--from", "nowhere", "--add-style", "x.png"), "--from nowhere: not a kstyle run"),
        (("--style", "s.png", "--add-style", "x.png", "--from", "r"), "--style does not go with"),
    ],
)
def test_add_style_mistakes_are_one_line_errors(base, tmp_path, extra, message):
    args = ["--data", str(base / "data"), "--output", str(tmp_path / "out"), *extra]
    result = run_in_process("train.py", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_one_style_trains_todays_seed_net_with_todays_first_step(style_file):
    """``--style`` once: the task builds the seed net and the seed's trainer, and its first
    step's losses equal, bit for bit, those of the trainer built as before several styles."""
    import keras
    import tensorflow as tf

    from kstyle.config import TrainConfig
    from kstyle.loss_net import build_loss_net
    from kstyle.tasks import build_task_trainer, load_style_image
    from kstyle.trainer import StyleTransferTrainer, compile_trainer
    from kstyle.transform_net import build_transform_net

    config = TrainConfig(style=style_file, vgg_weights="random", image_size=32, seed=4)
    content = tf.constant(batch(4, 32, seed=20))
    keras.utils.set_random_seed(4)
    trainer, _ = build_task_trainer(config)
    assert type(trainer) is StyleTransferTrainer
    assert trainer.transform_net.count_params() == 1_679_235
    assert len(trainer.transform_net.inputs) == 1
    now = {k: float(v) for k, v in trainer.train_step(content).items()}
    keras.utils.set_random_seed(4)
    before = StyleTransferTrainer(
        build_transform_net(),
        build_loss_net(None),
        load_style_image(style_file, 32),
        image_size=32,
    )
    compile_trainer(before, config)
    then = {k: float(v) for k, v in before.train_step(content).items()}
    assert now == then and now["style"] > 0


@pytest.mark.parametrize("arch", PRESETS)
def test_every_preset_trains_several_styles(arch, loss_net):
    """One step of a 3-style net of each preset: only the drawn style's targets count, and the
    undrawn styles' rows get no update."""
    import tensorflow as tf

    from kstyle.config import TrainConfig
    from kstyle.multi_style import MultiStyleTransferTrainer
    from kstyle.style_tables import style_tables
    from kstyle.trainer import compile_trainer

    net = multi_net(arch, styles=3, seed=6)
    styles = batch(3, 32, seed=30)
    trainer = MultiStyleTransferTrainer(net, loss_net, styles, ["a", "b", "c"], image_size=32)
    compile_trainer(trainer, TrainConfig(style="s.png"))
    tables = {t.name: t.kernel.numpy() for pair in style_tables(net).values() for t in pair}
    content = tf.constant(batch(2, 32, seed=40))
    losses = trainer.train_step((content, tf.constant([1, 1])))
    assert all(np.isfinite(float(v)) for v in losses.values())
    for pair in style_tables(net).values():
        for table in pair:
            before, after = tables[table.name], table.kernel.numpy()
            np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])  # not drawn
            assert np.any(after[1] != before[1])  # drawn: learned
    # the style loss is the drawn style's: its targets, not another's
    single = trainer.compute_losses(content, trainer.stylize(content, tf.constant([1, 1])),
                                    tf.constant([1, 1]))[1]["style"]  # fmt: skip
    other = trainer.compute_losses(content, trainer.stylize(content, tf.constant([1, 1])),
                                   tf.constant([2, 2]))[1]["style"]  # fmt: skip
    assert float(single) != float(other)


def test_a_contact_sheet_shows_every_style_and_blends_labelled(base, three_styles, tmp_path):
    from kstyle.images import load_image
    from kstyle.inference import stylize_array
    from kstyle.sheet import LABEL_HEIGHT
    from kstyle.transform_net import load_transform_net

    photo = base / "data" / "img_01.jpg"
    target = tmp_path / "sheet.png"
    result = run_in_process("kstyle sheet", photo, "--model", three_styles, "--output", target)
    assert result.returncode == 0, result.stderr
    sheet, image = load_image(str(target)), load_image(str(photo))
    net = load_transform_net(str(three_styles))
    styles = [None, "0", "1", "2", "0:0.5,1:0.5", "1:0.5,2:0.5"]  # photo, 3 styles, 2 blends
    height, width = image.shape[:2]
    for index, style in enumerate(styles):
        row, column = divmod(index, 4)
        top, left = row * (height + LABEL_HEIGHT + 8), column * (width + 8)
        tile = sheet[top : top + height, left : left + width]
        expected = image if style is None else stylize_array(net, image, style=style)
        np.testing.assert_array_equal(tile, expected)
        label = sheet[top + height : top + height + LABEL_HEIGHT, left : left + width]
        assert (label < 128).any()  # a label is written under each picture
    assert sheet.shape[0] == 2 * (height + LABEL_HEIGHT) + 8  # two rows of 4
    bad = run_in_process("kstyle sheet", photo, "--model", three_styles, "--output", "x.txt")
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_a_baked_style_follows_the_tables_as_they_change():
    """styled_net keeps baked nets; each call copies the tables' current rows into them."""
    from kstyle.images import to_uint8
    from kstyle.styles import bake_style, styled_net

    net = multi_net("tiny", styles=2, seed=8)
    content = batch(1, 32, seed=50)
    first = styled_net(net, 1)
    random_tables(net, seed=9)  # the net learns on (or is loaded again)
    again = styled_net(net, 1)
    assert again is first  # the same compiled net, not a new one per call
    np.testing.assert_array_equal(
        to_uint8(again.predict(content, verbose=0)),
        to_uint8(bake_style(net, 1).predict(content, verbose=0)),
    )


def test_a_base_of_another_preset_is_a_one_line_error():
    from kstyle.style_tables import extend_styles
    from kstyle.transform_net import build_transform_net

    with pytest.raises(KstyleError, match="the base net"):
        extend_styles(build_transform_net("tiny", num_styles=3), multi_net("live", styles=2))
    with pytest.raises(KstyleError, match="must have more"):
        extend_styles(build_transform_net("tiny", num_styles=2), multi_net("tiny", styles=2))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_several_styles_train_under_mixed_precision(precision, loss_net):
    import tensorflow as tf

    from kstyle.config import TrainConfig
    from kstyle.distribute import dtype_policy
    from kstyle.multi_style import MultiStyleTransferTrainer
    from kstyle.styles import bake_style
    from kstyle.trainer import compile_trainer

    with dtype_policy(precision):
        net = multi_net("tiny", styles=2, seed=10)
        trainer = MultiStyleTransferTrainer(net, loss_net, batch(2, 32), ["a", "b"], image_size=32)
        compile_trainer(trainer, TrainConfig(style="s.png", mixed_precision=precision))
    losses = trainer.train_step((tf.constant(batch(2, 32, seed=60)), tf.constant([0, 0])))
    assert all(np.isfinite(float(value)) for value in losses.values())
    picture = bake_style(net, "0:0.5,1:0.5").predict(batch(1, 32), verbose=0)
    assert picture.dtype == np.float32 and np.isfinite(picture).all()


def test_a_net_of_one_style_has_nothing_to_bake_or_extend():
    from kstyle.style_tables import extend_styles
    from kstyle.styles import bake_style, styled_net
    from kstyle.transform_net import build_transform_net

    plain = build_transform_net("tiny")
    assert styled_net(plain) is plain and styled_net(plain, 0) is plain
    with pytest.raises(KstyleError, match="a net of one style: there is nothing to bake"):
        bake_style(plain, 0)
    with pytest.raises(KstyleError, match="must have more"):
        extend_styles(build_transform_net("tiny"), plain)


# --- distillation of a net of several styles ------------------------------------------------


def test_drawn_style_vectors_are_single_styles_and_blends_of_two_and_resume_alike():
    import tensorflow as tf

    from kstyle.distill import MultiStyleDistillationTrainer, drawn_style_vectors

    positions = tf.range(400, dtype=tf.int64)
    vectors = drawn_style_vectors(positions, 4, seed=3).numpy()
    assert vectors.shape == (400, 4) and np.all(vectors >= 0)
    np.testing.assert_allclose(vectors.sum(axis=1), 1.0, rtol=1e-6)
    used = (vectors > 0).sum(axis=1)
    assert set(used) <= {1, 2}  # one style, or a blend of two
    single = np.isclose(vectors.max(axis=1), 1.0)
    # half alone, plus the blends of a style with itself (1/4 of the rest): 0.625
    assert 0.55 < single.mean() < 0.7
    assert set(np.argmax(vectors[single], axis=1)) == {0, 1, 2, 3}  # every style drawn
    blends = vectors[used == 2]
    assert len(blends) > 100 and 0.2 < np.median(blends.max(axis=1)) < 0.9
    # a function of the seed and the place alone
    again = drawn_style_vectors(tf.constant([7, 3], tf.int64), 4, seed=3).numpy()
    np.testing.assert_array_equal(again, vectors[[7, 3]])
    assert not np.array_equal(drawn_style_vectors(positions, 4, seed=4).numpy(), vectors)
    # the stream that resumes at step 5 labels its images as the whole stream did
    fake = type("Fake", (), {"num_styles": 4})()
    content = tf.data.Dataset.from_tensor_slices(tf.zeros((12, 3, 2, 2, 3)))
    labels = MultiStyleDistillationTrainer.label_stream
    whole = [v.numpy() for _, v in labels(fake, content, 0, seed=3)]
    resumed = [v.numpy() for _, v in labels(fake, content.skip(5), 5, seed=3)]
    np.testing.assert_array_equal(np.concatenate(resumed), np.concatenate(whole[5:]))
    np.testing.assert_array_equal(np.concatenate(whole), vectors[:36])
    # two workers (input pipelines), 2 replicas each: step s takes global batches 4s to 4s+3,
    # worker 1 the last two; resumed at step 2 it goes on there
    worker = [v.numpy() for _, v in labels(fake, content, 2, 3, per_step=2, pipeline=(1, 2))]
    for index in range(4):  # worker 1's batches: step 2 slots 0-1, step 3 slots 0-1
        batch = (2 + index // 2) * 4 + 2 + index % 2
        np.testing.assert_array_equal(worker[index], vectors[batch * 3 : batch * 3 + 3])


def test_a_teacher_of_three_styles_gives_a_student_of_three_styles(base, three_styles):
    from kstyle.distill import pixel_loss
    from kstyle.distill_config import DistillConfig
    from kstyle.run import train
    from kstyle.smoke import recorded_style_names
    from kstyle.style_tables import style_count
    from kstyle.transform_net import load_transform_net

    # the run's teacher, its style tables made random and distinct: styles far apart
    teacher = random_tables(load_transform_net(str(three_styles)), seed=2)
    (base / "teacher").mkdir()
    shutil.copyfile(three_styles / "config.json", base / "teacher" / "config.json")
    teacher.save(base / "teacher" / "model.keras")
    output = base / "student"
    config = DistillConfig(
        teacher=str(base / "teacher"), data=str(base / "data"), output=str(output), arch="live",
        image_size=32, batch_size=2, steps=60, epochs=60, seed=1, plot_every=60, verbose=0,
    )  # fmt: skip
    summary = train(config, printer=lambda line: None)
    student = load_transform_net(str(output))
    assert style_count(student) == 3
    assert recorded_style_names(str(output)) == ["candy", "scream", "wave"]  # the file's own
    saved = json.loads((output / "config.json").read_text())
    assert saved["style_names"] == ["candy", "scream", "wave"]
    assert "stateless_uniform" in saved["style_vectors"]
    with open(output / "history.csv", newline="") as file:
        losses = [float(row["loss"]) for row in csv.DictReader(file)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    # every style's rows learned, each its own way (they start equal: ones and zeros)
    from kstyle.style_tables import style_tables

    for scale, offset in style_tables(student).values():
        for table in (scale.kernel.numpy(), offset.kernel.numpy()):
            assert not np.allclose(table[0], table[1]) and not np.allclose(table[1], table[2])
            assert not np.allclose(table[0], table[2])
    # the loss compares the student's and the teacher's pictures for the image's own vector
    trainer = summary_trainer(config, teacher, student)
    content = batch(2, 32)
    vectors = np.asarray([[1, 0, 0], [0.3, 0, 0.7]], np.float32)
    outputs = student([content, vectors])
    total, parts = trainer.compute_losses(content, outputs, vectors)
    expected = pixel_loss(outputs, teacher([content, vectors]))
    assert float(total) == float(parts["pixel"]) == pytest.approx(float(expected), rel=1e-6)
    swapped, _ = trainer.compute_losses(content, outputs, vectors[::-1])  # other targets
    other = pixel_loss(outputs, teacher([content, vectors[::-1]]))
    assert float(swapped) == pytest.approx(float(other), rel=1e-6)
    assert abs(float(swapped) - float(total)) > 1e-4
    with Image.open(output / "preview.png") as preview:  # a row per style: input | T | S
        assert preview.size == (3 * 32 + 2 * 8, 3 * 32 + 2 * 8)
    assert summary["losses"]["loss"] > 0


def summary_trainer(config, teacher, student):
    """The distillation trainer of ``config`` around a given teacher and student."""
    from kstyle.distill import MultiStyleDistillationTrainer

    return MultiStyleDistillationTrainer(student, teacher, 3, image_size=config.image_size)
