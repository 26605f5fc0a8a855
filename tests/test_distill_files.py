"""``kstyle distill --teacher FILE``: kstyle's own SavedModel, TFLite and ONNX exports of a
test net teach as its ``.keras`` file does; resume, fixed sizes and extra inputs (32 px)."""

import csv
import json
import os
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
from conftest import (
    ROOT,
    assert_one_line_error,
    checkpoint_step,
    kill_after_checkpoint,
)
from teacher_models import expected, onnx_teacher, sample_pictures
from test_distill import OPTIONS, STEPS, inputs  # noqa: F401 (inputs: a fixture)
from test_multi_style import multi_net

from kstyle.distill_config import DistillConfig
from kstyle.errors import KstyleError
from kstyle.transform_net import build_transform_net

EXPORTS = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}


@pytest.fixture(scope="module")
def exported(inputs):  # noqa: F811 (the imported fixture)
    """test_distill's content folder and teacher run (a small random net with random
    norms), and the teacher's SavedModel, fp32 TFLite and ONNX exports in ``exports/``."""
    from kstyle.export import export

    export(str(inputs / "teacher"), str(inputs / "exports"), verify_size=32,
           printer=lambda *_: None)  # fmt: skip
    return inputs


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as file:
        return [float(row["loss"]) for row in csv.DictReader(file)]


@pytest.fixture(scope="module")
def students(exported):
    """A 30-step distillation, in process, from the ``.keras`` teacher and from each export."""
    from kstyle.run import train

    teachers = {"keras": exported / "teacher" / "model.keras"}
    teachers |= {fmt: exported / "exports" / name for fmt, name in EXPORTS.items()}
    summaries = {}
    for fmt, teacher in teachers.items():
        config = DistillConfig(
            teacher=str(teacher), data=str(exported / "data"),
            output=str(exported / f"student-{fmt}"), verbose=0, **OPTIONS,
        )  # fmt: skip
        summaries[fmt] = train(config, printer=lambda line: None)
    return summaries


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_every_export_teaches_as_the_keras_file_does(exported, students, fmt):
    reference, summary = history(students["keras"]["run_dir"]), history(students[fmt]["run_dir"])
    assert len(summary) == STEPS
    assert np.mean(summary[-3:]) < 0.5 * np.mean(summary[:3])
    # the exports return uint8 pictures, the .keras file floats: the same targets to half a
    # level, so the same steps and losses to a few per cent
    np.testing.assert_allclose(summary, reference, rtol=0.05)
    # Adam's steps follow the gradients' signs, so the weights drift apart a little; the
    # students' pictures stay much closer to each other than to the teacher's
    images = sample_pictures(count=2, height=32, width=32, seed=3)
    mine, theirs = (
        np.asarray(keras.saving.load_model(students[name]["model_path"])(images))
        for name in (fmt, "keras")
    )
    teacher = np.asarray(keras.saving.load_model(exported / "teacher" / "model.keras")(images))
    apart, off = np.abs(mine - theirs).mean(), np.abs(theirs - teacher).mean()
    assert apart < 0.2 * off, (apart, off)


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_the_run_records_the_file_its_hash_and_the_teachers_time(exported, students, fmt):
    from kstyle.files import file_sha256, folder_sha256

    summary = students[fmt]
    path = exported / "exports" / EXPORTS[fmt]
    digest = folder_sha256(str(path)) if path.is_dir() else file_sha256(str(path))
    for name in ("config.json", "summary.json"):
        saved = json.loads((exported / f"student-{fmt}" / name).read_text())
        assert (saved["teacher_model"], saved["teacher_sha256"]) == (str(path), digest), name
    assert summary["teacher_seconds"] > 0
    assert 0 < summary["teacher_share"] < 1  # it ran beside the steps, never all of the time
    assert "teacher_seconds" not in students["keras"]


def in_process(args, capsys):
    from kstyle.cli.main import main

    capsys.readouterr()
    code = main(args)
    return types.SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def command(exported, teacher, output, *extra, steps=2):
    return [
        "distill", "--teacher", str(teacher), "--data", str(exported / "data"),
        "--output", str(output), "--batch-size", "2", "--steps", str(steps),
        "--plot-every", "0", "--seed", "1", "--arch", "tiny", *extra,
    ]  # fmt: skip


def test_a_fixed_size_teacher_sets_the_crop_size(exported, tmp_path, capsys):
    teacher = onnx_teacher(tmp_path / "fixed.onnx", shape=[None, 3, 32, 32])
    output = tmp_path / "student"
    result = in_process(command(exported, teacher, output, "--teacher-range", "0-1"), capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training crops of 32×32, the teacher's size" in result.stderr
    assert "ONNX teacher, float32 NCHW in [0, 1], 32×32" in result.stderr
    saved = json.loads((output / "config.json").read_text())
    assert (saved["image_size"], saved["teacher_range"]) == (32, "0-1")
    # an explicit size that the teacher does not take
    for flag in ("--image-size", "--image-s"):  # argparse takes an abbreviation too
        args = command(exported, teacher, tmp_path / "other", "--teacher-range", "0-1", flag,
                       "64")  # fmt: skip
        assert_one_line_error(in_process(args, capsys), "takes only 32×32 images",
                              "--image-size 32")  # fmt: skip


def test_a_multi_style_export_teaches_one_style_with_teacher_input(tmp_path):
    from kstyle.export import export
    from kstyle.inference import stylize_array
    from kstyle.teacher_files import parse_teacher_inputs
    from kstyle.teacher_runtimes import open_teacher

    net = multi_net("tiny", styles=2, seed=3)  # random style tables: the styles differ
    net.save(tmp_path / "two.keras")
    export(str(tmp_path / "two.keras"), str(tmp_path / "out"), formats=("onnx",),
           verify_size=32, printer=lambda *_: None)  # fmt: skip
    images = sample_pictures(count=1, height=32, width=32)
    pictures = {}
    for style in ((1.0, 0.0), (0.0, 1.0)):
        given = parse_teacher_inputs([f"style={style[0]},{style[1]}"])
        teacher = open_teacher(str(tmp_path / "out" / "model.onnx"), inputs=given)
        pictures[style] = teacher(images)[0]
        keras_picture = stylize_array(net, images[0].astype(np.uint8), style=np.array(style))
        assert np.abs(pictures[style] - keras_picture.astype(np.float32)).max() <= 1
    assert np.abs(pictures[(1.0, 0.0)] - pictures[(0.0, 1.0)]).mean() > 5


def test_bad_file_teachers_fail_before_anything_is_written(exported, tmp_path, capsys):
    plain = onnx_teacher(tmp_path / "plain.onnx")
    output = tmp_path / "student"
    for extra, fragment in (
        ((), "give --teacher-range 0-1 or 0-255"),
        (("--teacher-range", "0-1", "--teacher-input", "style=1"), "has no input 'style'"),
        (("--teacher-input", "style"), "takes NAME=VALUES"),
    ):
        line = assert_one_line_error(in_process(command(exported, plain, output, *extra), capsys),
                                     fragment)  # fmt: skip
        assert line.startswith("error: --teacher"), line
    keras_teacher = exported / "teacher"
    args = command(exported, keras_teacher, output, "--teacher-range", "0-1")
    assert_one_line_error(in_process(args, capsys), "--teacher-range is for a SavedModel")
    assert not output.exists()


def test_a_killed_run_refuses_a_changed_file_teacher_and_resumes_with_it(
    exported, tmp_path, capsys
):
    teacher = tmp_path / "teacher.onnx"
    shutil.copyfile(exported / "exports" / "model.onnx", teacher)
    output = tmp_path / "killed"
    args = [sys.executable, "-m", "kstyle", *command(exported, teacher, output, steps=10),
            "--image-size", "32", "--checkpoint-every", "2"]  # fmt: skip
    killed_at = kill_after_checkpoint(args, output, at_least=2)
    assert 2 <= killed_at < 10
    original = teacher.read_bytes()
    onnx_teacher(teacher, dtype="uint8", layout="NHWC")  # another network, the same name
    line = assert_one_line_error(in_process(args[3:], capsys), "teacher_sha256", "--restart")
    assert checkpoint_step(output) == killed_at and str(output) in line
    teacher.write_bytes(original)
    result = in_process(args[3:], capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {output} at step {killed_at}" in result.stderr
    assert len(history(output)) == 10


def test_the_pictures_a_teacher_gives_the_trainer_are_its_own(exported, tmp_path):
    """The input pipeline's pairs: each image with the file teacher's picture of it."""
    import tensorflow as tf

    from kstyle.distill import FileTeacherDistillationTrainer
    from kstyle.teacher_runtimes import open_teacher

    teacher = open_teacher(onnx_teacher(tmp_path / "t.onnx"), "0-1")
    trainer = FileTeacherDistillationTrainer(build_transform_net(arch="tiny"), teacher,
                                             image_size=32)  # fmt: skip
    images = sample_pictures(count=4, height=32, width=32)
    stream = trainer.label_stream(tf.data.Dataset.from_tensor_slices(images).batch(2), 0, 1)
    pairs = list(stream.take(2).as_numpy_iterator())
    assert trainer.close_feeds() is None
    for index, (batch, pictures) in enumerate(pairs):
        np.testing.assert_array_equal(batch, images[2 * index : 2 * index + 2])
        np.testing.assert_allclose(pictures, expected(batch), atol=1e-3)
    assert teacher.calls == 2  # a call a batch (the probe is not counted)
    # a teacher that fails while training: the error reaches whoever closes the feed
    broken = open_teacher(onnx_teacher(tmp_path / "b.onnx"), "0-1")
    trainer = FileTeacherDistillationTrainer(build_transform_net(arch="tiny"), broken,
                                             image_size=32)  # fmt: skip

    def fail(feeds):
        raise RuntimeError("out of memory\nand more")

    broken.run = fail
    stream = trainer.label_stream(tf.data.Dataset.from_tensor_slices(images).batch(2), 0, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="is closed"):  # the stream ends
        list(stream.take(2).as_numpy_iterator())
    failure = trainer.close_feeds()
    assert isinstance(failure, KstyleError)
    assert str(failure).endswith("b.onnx: the teacher failed: out of memory")
    # in fit: the teacher's error, not the stream's, ends the call
    trainer.compile(optimizer=keras.optimizers.Adam())
    stream = trainer.label_stream(tf.data.Dataset.from_tensor_slices(images).batch(2), 0, 1)
    with pytest.raises(KstyleError, match="the teacher failed: out of memory$"):
        trainer.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    assert trainer.feeds == []
    # a Ctrl-C in fit (a library caller's second one) stops the feed's thread too
    trainer.teacher = teacher

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    stream = trainer.label_stream(
        tf.data.Dataset.from_tensor_slices(images).batch(2).repeat(), 0, 1
    )
    feed = trainer.feeds[0]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(stream, steps_per_epoch=2, epochs=1, verbose=0, callbacks=[Interrupt()])
    assert trainer.feeds == [] and not feed.thread.is_alive()


def test_the_command_ends_when_training_ends(exported, tmp_path):
    """The feed's thread and queue close with the run: the process exits (a Python call
    inside tf.data could hang it at exit, which this would time out on)."""
    output = tmp_path / "student"
    args = [sys.executable, "-m", "kstyle", *command(exported, exported / "exports" /
            "model.tflite", output, steps=20), "--image-size", "32", "-q"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("done: 20 steps")
    assert len(history(output)) == 20


def test_a_smoke_tests_export_teaches_a_smoke_test(exported, tmp_path):
    teacher = tmp_path / "model.onnx"
    shutil.copyfile(exported / "exports" / "model.onnx", teacher)
    config = DistillConfig(teacher=str(teacher), data=str(exported / "data"))
    assert config.smoke_test_cause() is None  # the test teacher's export is not marked
    sidecar = json.loads((exported / "exports" / "model.onnx.json").read_text())
    assert sidecar["smoke_test"] is False
    (tmp_path / "model.onnx.json").write_text(json.dumps({**sidecar, "smoke_test": True}))
    assert "is a smoke test's model" in config.smoke_test_cause()


def test_each_exported_file_has_a_run_of_its_own_by_default(exported):
    def output(teacher):
        return DistillConfig(teacher=str(teacher)).resolved_output()

    exports = exported / "exports"
    assert output(exports / "model.onnx") == os.path.join("runs", "exports-model-onnx-tiny")
    assert output(exports / "model.tflite") == os.path.join("runs", "exports-model-tflite-tiny")
    assert output(exports / "saved_model") == os.path.join("runs", "exports-saved_model-tiny")
    assert output("a/candy.onnx") == os.path.join("runs", "candy-tiny")
    assert output(exported / "teacher") == os.path.join("runs", "teacher-tiny")


def test_a_resumed_run_refuses_changed_teacher_inputs_and_sidecar(exported, tmp_path):
    from kstyle.distill_config import exported_teacher_record

    teacher = tmp_path / "model.onnx"
    shutil.copyfile(exported / "exports" / "model.onnx", teacher)
    first = exported_teacher_record(str(teacher), ["style=0,1"])
    assert first["teacher_sidecar_sha256"] is None and first["teacher_data_sha256"] == []
    assert exported_teacher_record(str(teacher), ["style=0,1"]) == first
    assert exported_teacher_record(str(teacher), ["style=1,0"]) != first
    np.save(tmp_path / "s.npy", np.array([0.0, 1.0]))
    from_file = exported_teacher_record(str(teacher), [f"style={tmp_path / 's.npy'}"])
    assert from_file["teacher_input_sha256"] == first["teacher_input_sha256"]
    (tmp_path / "model.onnx.json").write_text('{"input": {"range": [0, 1]}}')
    assert exported_teacher_record(str(teacher), ["style=0,1"])["teacher_sidecar_sha256"]


MIRRORED_TEACHER = """
import json, sys
sys.path.insert(0, {root!r})
import tensorflow as tf

from kstyle.distill_config import DistillConfig
from kstyle.run import train


class Gain(tf.Module):  # a SavedModel teacher with a variable, which a scope would mirror
    def __init__(self):
        self.gain = tf.Variable(0.5)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def serve(self, image):
        return {{"stylized": image * self.gain}}


module = Gain()
tf.saved_model.save(module, {teacher!r}, signatures={{"serving_default": module.serve}})
config = DistillConfig(teacher={teacher!r}, teacher_range="0-1", data={data!r},
                       output={output!r}, strategy="mirrored", image_size=32, batch_size=2,
                       steps=3, arch="tiny", plot_every=0, verbose=0, seed=1)
summary = train(config, printer=lambda *_: None)
print(json.dumps({{"steps": summary["steps"], "share": summary["teacher_share"]}}))
"""


def test_a_saved_model_teacher_with_variables_trains_under_a_mirrored_strategy(exported, tmp_path):
    script = MIRRORED_TEACHER.format(
        root=str(ROOT), teacher=str(tmp_path / "gain"), data=str(exported / "data"),
        output=str(tmp_path / "out"),
    )  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1])["steps"] == 3


def test_a_feed_whose_content_runs_out_ends_its_stream(tmp_path):
    import tensorflow as tf
    from conftest import raises_within

    from kstyle.distill import FileTeacherDistillationTrainer
    from kstyle.teacher_runtimes import open_teacher

    teacher = open_teacher(onnx_teacher(tmp_path / "t.onnx"), "0-1")
    trainer = FileTeacherDistillationTrainer(build_transform_net(arch="tiny"), teacher,
                                             image_size=32)  # fmt: skip
    images = sample_pictures(count=4, height=32, width=32)
    stream = trainer.label_stream(tf.data.Dataset.from_tensor_slices(images).batch(2), 0, 1)
    pairs = []
    error = raises_within(60, lambda: pairs.extend(stream.as_numpy_iterator()))
    assert isinstance(error, tf.errors.InvalidArgumentError) and "closed" in str(error)
    assert len(pairs) == 2  # both batches, then the end instead of a wait
    assert trainer.close_feeds() is None  # running out is not the teacher's failure
