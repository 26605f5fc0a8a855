"""``kstyle distill``: a small student learns a trained teacher's outputs (32 px, no VGG)."""

import csv
import dataclasses
import hashlib
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
    assert_one_line_error,
    checkpoint_step,
    kill_after_checkpoint,
    randomize_norms,
    write_image_folder,
)
from PIL import Image

from kstyle.config import StyleOptions
from kstyle.distill_config import DistillConfig
from kstyle.errors import KstyleError
from kstyle.run_dir import smoke_test_fields
from kstyle.transform_net import build_transform_net

STEPS = 30
OPTIONS = dict(
    image_size=32, batch_size=2, steps=STEPS, epochs=20, seed=1, arch="tiny", plot_every=10
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A content folder and a teacher run directory (a small random net with random norms,
    so that its pictures are far from anything an untrained student makes)."""

    base = tmp_path_factory.mktemp("distill")
    write_image_folder(str(base / "data"), count=6, size=(36, 44))
    keras.utils.set_random_seed(5)
    teacher = randomize_norms(build_transform_net(num_residual_blocks=1, width=0.5), seed=5)
    os.makedirs(base / "teacher")
    teacher.save(base / "teacher" / "model.keras")
    return base


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as file:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(file)]


def model_weights(path):
    from kstyle.transform_net import load_transform_net

    return load_transform_net(str(path)).get_weights()


@pytest.fixture(scope="module")
def distilled(inputs):
    """A finished 30-step distillation, in process, and the teacher's bytes before it."""
    from kstyle.run import train

    teacher_file = inputs / "teacher" / "model.keras"
    before = teacher_file.read_bytes()
    config = DistillConfig(
        teacher=str(inputs / "teacher"), data=str(inputs / "data"),
        output=str(inputs / "student"), verbose=0, **OPTIONS,
    )  # fmt: skip
    summary = train(config, printer=lambda line: None)
    return summary, before


def test_pixel_loss_is_the_mean_squared_error_of_pictures_in_0_1():
    from kstyle.distill import pixel_loss

    rng = np.random.default_rng(0)
    student, teacher = rng.uniform(0, 255, (2, 3, 4, 3)), rng.uniform(0, 255, (2, 3, 4, 3))
    expected = np.mean(((student - teacher) / 255.0) ** 2)
    assert float(pixel_loss(student, teacher)) == pytest.approx(expected, rel=1e-5)
    black, white = np.zeros((1, 2, 2, 3)), np.full((1, 2, 2, 3), 255.0)
    assert float(pixel_loss(black, white)) == pytest.approx(1.0)
    assert float(pixel_loss(white, white)) == 0.0


def test_the_student_learns_the_teacher_which_is_left_alone(inputs, distilled):
    summary, before = distilled
    rows = history(summary["run_dir"])
    assert [step for step, _ in rows] == list(range(1, STEPS + 1))
    first, last = np.mean([loss for _, loss in rows[:3]]), np.mean([loss for _, loss in rows[-3:]])
    assert last < 0.5 * first, (first, last)
    assert summary["losses"]["perceptual"] == 0.0  # off by default: no VGG
    assert summary["losses"]["loss"] == pytest.approx(summary["losses"]["pixel"])
    teacher_file = inputs / "teacher" / "model.keras"
    assert teacher_file.read_bytes() == before  # never written
    assert sorted(os.listdir(inputs / "teacher")) == ["model.keras"]
    student = model_weights(summary["model_path"])
    teacher = model_weights(teacher_file)
    assert sum(w.size for w in student) < sum(w.size for w in teacher) / 3  # a smaller net


def test_the_run_records_the_teacher_path_and_hash(inputs, distilled):
    summary, before = distilled
    digest = hashlib.sha256(before).hexdigest()
    path = os.path.abspath(inputs / "teacher" / "model.keras")
    for name in ("config.json", "summary.json"):
        with open(os.path.join(summary["run_dir"], name)) as file:
            saved = json.load(file)
        assert (saved["teacher_model"], saved["teacher_sha256"]) == (path, digest), name
    with open(os.path.join(summary["run_dir"], "config.json")) as file:
        assert json.load(file)["teacher"] == str(inputs / "teacher")


def test_the_preview_shows_input_teacher_and_student(inputs, distilled):
    from kstyle.transform_net import load_transform_net

    summary, _ = distilled
    preview = np.asarray(Image.open(os.path.join(summary["run_dir"], "preview.png")))
    assert preview.shape == (32, 3 * 32 + 2 * 8, 3)
    content, teacher_out, student_out = (preview[:, i * 40 : i * 40 + 32] for i in range(3))
    assert (preview[:, 32:40] == 255).all() and (preview[:, 72:80] == 255).all()
    batch = content[None].astype("float32")
    teacher = np.asarray(load_transform_net(str(inputs / "teacher"))(batch))[0]
    student = np.asarray(load_transform_net(summary["model_path"])(batch))[0]
    # each panel is its net's output for the (unrounded) input: close, and not the other's
    for panel, mine, other in ((teacher_out, teacher, student), (student_out, student, teacher)):
        assert np.abs(panel - mine).mean() < 4
        assert np.abs(panel - other).mean() > 5 * np.abs(panel - mine).mean()
    assert np.abs(teacher_out.astype(int) - content).mean() > 10  # three different pictures


RESUME_STEPS = 12


def command(inputs, output, *extra, teacher=None):
    return [
        sys.executable, "-m", "kstyle", "distill", "--teacher", str(teacher or inputs / "teacher"),
        "--data", str(inputs / "data"), "--output", str(output), "--image-size", "32",
        "--batch-size", "2", "--steps", str(RESUME_STEPS), "--checkpoint-every", "2",
        "--plot-every", "0", "--seed", "1", "--epochs", "10", "--arch", "tiny", *extra,
    ]  # fmt: skip


def run(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


def in_process(args, capsys):
    """``args`` (a :func:`command`) run by ``kstyle.cli.main`` in this process (no start-up
    cost), as a result with ``returncode`` and ``stderr``."""
    from kstyle.cli.main import main

    capsys.readouterr()
    code = main(args[3:])
    return types.SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def test_a_killed_distillation_resumes_as_if_never_stopped_with_its_teacher(
    inputs, tmp_path, capsys
):
    uninterrupted = tmp_path / "uninterrupted"
    result = run(command(inputs, uninterrupted))
    assert result.returncode == 0, result.stderr[-3000:]
    teacher = tmp_path / "teacher"  # a copy that can be "retrained" in place
    shutil.copytree(inputs / "teacher", teacher)
    output = tmp_path / "killed"
    args = command(inputs, output, teacher=teacher)
    killed_at = kill_after_checkpoint(args, output, at_least=4)
    assert 4 <= killed_at < RESUME_STEPS
    # the teacher file changed since: resuming would not continue the same run
    original = (teacher / "model.keras").read_bytes()
    other = tmp_path / "other.keras"
    keras.utils.set_random_seed(9)
    build_transform_net(num_residual_blocks=1, width=0.5).save(other)
    shutil.copyfile(other, teacher / "model.keras")
    line = assert_one_line_error(in_process(args, capsys), "teacher_sha256", "--restart")
    assert str(output) in line and checkpoint_step(output) == killed_at
    (teacher / "model.keras").write_bytes(original)
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {output} at step {killed_at}" in result.stderr
    rows, reference = history(output), dict(history(uninterrupted))
    assert [step for step, _ in rows] == list(range(1, RESUME_STEPS + 1))
    for step, loss in rows:
        assert loss == pytest.approx(reference[step], rel=1e-4), step
    mine, theirs = (
        model_weights(output / "model.keras"),
        model_weights(uninterrupted / "model.keras"),
    )
    # both runs on this machine's kernels, the same steps from the same state: a resume that
    # lost the optimizer state or repeated a batch is off by up to Adam's step (lr 1e-3)
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert checkpoint_step(output) == 0  # finished: the checkpoints are gone


def test_a_student_of_a_smoke_teacher_is_a_smoke_test_too(inputs, tmp_path, capsys):
    """The teacher's mark (kstyle.smoke) passes to the student's run and model file, and
    stylizing with the student prints the note, as training does."""
    from kstyle.smoke import SMOKE_TEST_NOTE, mark_model_file, model_file_marks

    teacher = tmp_path / "smoke-teacher" / "model.keras"
    teacher.parent.mkdir()
    shutil.copyfile(inputs / "teacher" / "model.keras", teacher)
    mark_model_file(str(teacher), {"smoke_test": True, "note": SMOKE_TEST_NOTE})
    output = tmp_path / "student"
    args = command(inputs, output, teacher=teacher)
    args[args.index("--steps") + 1] = "2"
    result = in_process(args, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        f"note: {SMOKE_TEST_NOTE} (its teacher {teacher} is a smoke test's model); the model "
        "learns no style"
    ) in result.stderr.splitlines()
    for name in ("config.json", "summary.json"):
        saved = json.loads((output / name).read_text())
        assert (saved["smoke_test"], saved["note"]) == (True, SMOKE_TEST_NOTE), name
    assert model_file_marks(str(output / "model.keras"))["smoke_test"] is True
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photo)
    capsys.readouterr()
    from kstyle.cli.main import main

    assert (
        main(["stylize", str(photo), "--model", str(output), "--output", str(tmp_path / "o.png")])
        == 0
    )
    assert capsys.readouterr().err.splitlines() == [
        f"note: {SMOKE_TEST_NOTE} ({output / 'model.keras'}); the model learned no style"
    ]


def test_bad_teachers_are_one_line_errors(inputs, tmp_path, capsys):
    inputs_layer = keras.Input((8,))
    keras.Model(inputs_layer, keras.layers.Dense(2)(inputs_layer)).save(tmp_path / "other.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    cases = {
        tmp_path / "missing": "model not found",
        tmp_path / "other.keras": "is not a style transform network",
        tmp_path / "junk.keras": "could not load model",
    }
    for teacher, fragment in cases.items():
        args = command(inputs, tmp_path / "out", teacher=teacher)
        assert_one_line_error(in_process(args, capsys), "--teacher", fragment)
    # the teacher's own run directory as --output: it would be written
    assert_one_line_error(
        in_process(command(inputs, inputs / "teacher"), capsys), "holds the teacher"
    )
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(inputs / "teacher")) == ["model.keras"]
    missing = command(inputs, tmp_path / "out")
    del missing[4:6]
    assert_one_line_error(in_process(missing, capsys), "--teacher is required")


def test_options_and_their_checks():
    from kstyle.cli.distill import build_parser

    options = vars(build_parser().parse_args(["--teacher", "t"]))
    assert options.pop("quiet") is False and options.pop("verbose") is False
    assert DistillConfig(**options) == DistillConfig(teacher="t")  # every default, the same
    style_only = {"style", "style_size", "content_weight", "style_weight", "tv_weight"}
    assert {field.name for field in dataclasses.fields(StyleOptions)} == style_only
    assert not style_only & set(options)  # style training's options are not offered
    with pytest.raises(KstyleError, match="--teacher is required"):
        DistillConfig().validate()
    with pytest.raises(KstyleError, match="--perceptual-weight must not be negative"):
        DistillConfig(teacher="t", perceptual_weight=-1.0).validate()
    with pytest.raises(KstyleError, match="--arch must be one of"):
        dataclasses.replace(DistillConfig(teacher="t"), arch="huge").validate()
    # a smoke test only when the untrained VGG-16 is actually used
    assert not smoke_test_fields(DistillConfig(teacher="t", vgg_weights="random"))["smoke_test"]
    perceptual = DistillConfig(teacher="t", vgg_weights="random", perceptual_weight=1.0)
    assert smoke_test_fields(perceptual)["smoke_test"]
    assert DistillConfig(teacher="runs/starry").resolved_output() == os.path.join(
        "runs", "starry-tiny"
    )
    assert DistillConfig(teacher="x/starry/model.keras").resolved_output() == os.path.join(
        "runs", "starry-tiny"
    )


HELP = """
import sys
from kstyle.cli.main import main
try:
    main(["distill", "--help"])
except SystemExit as done:
    assert done.code == 0
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
assert "kstyle.cli.distill" in sys.modules and not heavy, heavy
"""


def test_help_does_not_import_tensorflow():
    result = run([sys.executable, "-c", HELP])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--teacher" in result.stdout and "--perceptual-weight" in result.stdout


def test_the_texture_term_compares_each_images_gram_matrices():
    from kstyle.distill import texture_loss
    from kstyle.loss_net import STYLE_LAYERS

    rng = np.random.default_rng(3)
    shapes = {layer: (2, 4 >> i or 1, 3 >> i or 1, 5 + i) for i, layer in enumerate(STYLE_LAYERS)}
    student = {layer: rng.normal(size=shape).astype("float32") for layer, shape in shapes.items()}
    teacher = {layer: rng.normal(size=shape).astype("float32") for layer, shape in shapes.items()}

    def gram(features):  # (h, w, c) -> (c, c) / (c h w), one image
        flat = features.reshape(-1, features.shape[-1]).astype("float64")
        return flat.T @ flat / flat.size

    expected = sum(
        np.mean(
            [
                np.sum((gram(s) - gram(t)) ** 2)
                for s, t in zip(student[layer], teacher[layer], strict=True)
            ]
        )
        for layer in STYLE_LAYERS
    )
    assert float(texture_loss(student, teacher)) == pytest.approx(expected, rel=1e-4)
    assert float(texture_loss(teacher, teacher)) == 0.0
    # per image: the batch's mean Gram as every image's target would be another number
    mean_target = {
        layer: np.repeat(teacher[layer].mean(0, keepdims=True), 2, 0) for layer in STYLE_LAYERS
    }
    assert float(texture_loss(student, mean_target)) != pytest.approx(expected, rel=1e-2)


def test_a_texture_weight_adds_a_texture_column_and_needs_the_loss_net(inputs, tmp_path):
    from kstyle.run import train

    config = DistillConfig(
        teacher=str(inputs / "teacher"), data=str(inputs / "data"), output=str(tmp_path / "t"),
        verbose=0, texture_weight=1e-3, vgg_weights="random", **{**OPTIONS, "steps": 3},
    )  # fmt: skip
    assert config.uses_loss_net() and smoke_test_fields(config)["smoke_test"]
    summary = train(config, printer=lambda line: None)
    losses = summary["losses"]
    assert set(losses) == {"loss", "pixel", "perceptual", "texture"}
    assert losses["texture"] > 0 and losses["perceptual"] == 0.0
    assert losses["loss"] == pytest.approx(losses["pixel"] + losses["texture"], rel=1e-5)
    with open(os.path.join(summary["run_dir"], "history.csv")) as file:
        assert file.readline().strip().split(",")[2:6] == ["loss", "pixel", "perceptual", "texture"]
    assert not DistillConfig(teacher="t").uses_loss_net()  # off by default: no VGG
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(KstyleError, match="--texture-weight must be finite and not negative"):
            DistillConfig(teacher="t", texture_weight=bad).validate()
    assert DistillConfig(teacher="t").options_of_older_runs()["texture_weight"] == 0.0
