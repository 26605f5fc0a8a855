"""kstyle.run_dir: what --restart removes, the run found in a directory, config.json."""

import dataclasses
import json
import os
import types

import pytest

from kstyle.config import TrainConfig
from kstyle.distill_config import DistillConfig
from kstyle.errors import KstyleError
from kstyle.run_dir import (
    check_loss_net,
    check_ownership,
    clear_run,
    own_run_dir,
    previous_run,
    read_json,
    worker_dir,
    write_run_config,
)


def test_restart_removes_the_runs_files_and_nothing_else(tmp_path):
    for name in ("model.keras", "config.json", "history.csv", "losses.png", "preview.png",
                 "summary.json", "stylized.png", "notes.txt", ".kstyle.lock"):  # fmt: skip
        (tmp_path / name).write_text("x")
    for folder in ("checkpoints", "logs/train", "demo_data/content"):
        os.makedirs(tmp_path / folder)
        (tmp_path / folder / "file").write_text("x")
    clear_run(str(tmp_path))
    # the lock file stays: it may be a live process's (kstyle.lock)
    assert sorted(os.listdir(tmp_path)) == [".kstyle.lock", "demo_data", "notes.txt"]
    assert (tmp_path / "demo_data" / "content" / "file").exists()
    clear_run(str(tmp_path / "missing"))  # nothing there: nothing to do


def test_read_json_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(
        KstyleError,
        match="could not read .*missing.json: No such file or directory; pass --restart",
    ):
        read_json(str(tmp_path / "missing.json"))
    (tmp_path / "cut.json").write_text('{"steps": 4')
    with pytest.raises(
        KstyleError,
        match="cut.json: Expecting ',' delimiter: line 1 column 12 \\(char 11\\); pass --restart",
    ):
        read_json(str(tmp_path / "cut.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(KstyleError, match="list.json is not a JSON object"):
        read_json(str(tmp_path / "list.json"))
    (tmp_path / "good.json").write_text('{"steps": 4}')
    assert read_json(str(tmp_path / "good.json")) == {"steps": 4}


def write_checkpoint(run_dir, step):
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(step=tf.Variable(step))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), 2)
    manager.save(checkpoint_number=step)


def test_a_previous_run_is_resumed_only_with_its_options(tmp_path):
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), batch_size=2)
    assert previous_run(str(tmp_path), config) is None  # nothing there
    saved = {**dataclasses.asdict(config), "data_seed": 9}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert previous_run(str(tmp_path), config) is None  # no checkpoint: a new run
    write_checkpoint(str(tmp_path), 3)
    assert previous_run(str(tmp_path), config) == saved
    slower = dataclasses.replace(config, learning_rate=1e-4, plot_every=1, checkpoint_every=7)
    assert previous_run(str(tmp_path), slower) == saved  # options that may change
    with pytest.raises(KstyleError) as caught:
        previous_run(str(tmp_path), dataclasses.replace(config, batch_size=4))
    assert str(caught.value).startswith(
        f"{tmp_path} holds a run started with --batch-size 2 (now 4); rerun it with its "
        "options to resume, pass --restart to start over, or choose another --output"
    )
    with pytest.raises(KstyleError, match="--padding zeros \\(now reflect\\)"):
        previous_run(str(tmp_path), dataclasses.replace(config, padding="reflect"))
    del saved["data_seed"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(KstyleError, match="config.json lacks data_seed; pass --restart"):
        previous_run(str(tmp_path), config)


def test_a_run_started_on_the_old_tfds_default_resumes_on_it(tmp_path):
    """A run started before kstyle fetched COCO itself trained on tfds coco/2014 without
    --data; the same command (no --data, no --tfds-name) resumes it on that dataset."""
    config = TrainConfig(style="s.png", output=str(tmp_path))
    saved = {**dataclasses.asdict(config), "tfds_name": "coco/2014", "data_seed": 9}
    del saved["data_dir"]  # an option that did not exist then
    (tmp_path / "config.json").write_text(json.dumps(saved))
    write_checkpoint(str(tmp_path), 3)
    assert previous_run(str(tmp_path), config) == saved
    assert config.tfds_name == "coco/2014"  # so build_training_data reads tfds again
    on_a_folder = TrainConfig(style="s.png", output=str(tmp_path), data="photos")
    with pytest.raises(KstyleError, match="started with --data not given \\(now photos\\)"):
        previous_run(str(tmp_path), on_a_folder)
    saved["data_dir"] = None  # a new run started with --tfds-name must be given it again
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(KstyleError, match="--tfds-name coco/2014 \\(now not given\\); rerun"):
        previous_run(str(tmp_path), TrainConfig(style="s.png", output=str(tmp_path)))


def test_a_run_started_before_steps_could_pass_the_epochs_resumes_as_it_was(tmp_path):
    """Such a run recorded the epochs it was given, or the default then (2; the demo set
    100), which capped --steps; its config.json has no epochs_used. The same command (no
    --epochs) resumes it towards the total it was started for; a new run that was given
    --epochs must be given it again."""
    for old_epochs, steps in ((2, None), (2, 60), (100, 112)):
        config = TrainConfig(style="s.png", data="d", output=str(tmp_path), steps=steps)
        saved = {**dataclasses.asdict(config), "epochs": old_epochs, "data_seed": 9}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        write_checkpoint(str(tmp_path), 3)
        assert previous_run(str(tmp_path), config) == saved
        assert config.epochs == old_epochs  # so total_steps_of gives the run's old total
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), steps=60)
    saved = {**dataclasses.asdict(config), "epochs": 3, "epochs_used": 3, "data_seed": 9}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(KstyleError, match="started with --epochs 3 \\(now not given\\); rerun"):
        previous_run(str(tmp_path), config)
    assert config.epochs is None


def test_the_default_epochs_typed_out_resume_the_same_run(tmp_path):
    """Without --steps, --epochs 2 and no --epochs are one run, either way round; with
    --steps they are not (--epochs 2 would stop it first)."""
    write_checkpoint(str(tmp_path), 3)
    for then, now in ((None, 2), (2, None)):
        started = TrainConfig(style="s.png", data="d", output=str(tmp_path), epochs=then)
        saved = {**dataclasses.asdict(started), "epochs_used": 2, "data_seed": 9}
        (tmp_path / "config.json").write_text(json.dumps(saved))
        config = TrainConfig(style="s.png", data="d", output=str(tmp_path), epochs=now)
        assert previous_run(str(tmp_path), config) == saved
        assert config.epochs == then
    started = TrainConfig(style="s.png", data="d", output=str(tmp_path), steps=60)
    saved = {**dataclasses.asdict(started), "epochs_used": 4, "data_seed": 9}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), steps=60, epochs=2)
    with pytest.raises(KstyleError, match="started with --epochs not given \\(now 2\\)"):
        previous_run(str(tmp_path), config)
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), epochs=3)
    with pytest.raises(KstyleError, match="started with --epochs not given \\(now 3\\)"):
        previous_run(str(tmp_path), config)


def test_a_run_folder_is_owned_by_one_process(tmp_path, monkeypatch):
    """The lock itself is test_lock.py's; here: what own_run_dir checks and where it locks."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    run_dir = tmp_path / "run"
    with own_run_dir(str(run_dir)):
        assert (run_dir / ".kstyle.lock").read_text() == f"{os.getpid()}\n"
        check_ownership(str(run_dir))  # the lock file is kstyle's own
    assert not run_dir.exists()  # nothing was written: the folder made for the lock is gone
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("x")
    with pytest.raises(KstyleError, match="holds no kstyle run"):
        with own_run_dir(str(tmp_path / "theirs")):
            pass
    assert os.listdir(tmp_path / "theirs") == ["notes.txt"]  # refused before any lock file
    # in a multi-worker run only the chief takes the lock
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                         "index": 1}}))  # fmt: skip
    with own_run_dir(str(run_dir)):
        assert not run_dir.exists()


def test_a_run_started_before_the_presets_resumes_only_as_the_seed_net(tmp_path):
    """Such a run's config.json has no arch: it trained the seed net, so resuming it with a
    slimmer --arch would restore the seed's checkpoint into another network."""
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path))
    saved = {**dataclasses.asdict(config), "data_seed": 9}
    del saved["arch"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    write_checkpoint(str(tmp_path), 3)
    assert previous_run(str(tmp_path), config) == saved  # the default --arch johnson
    with pytest.raises(KstyleError) as caught:
        previous_run(str(tmp_path), dataclasses.replace(config, arch="tiny"))
    assert str(caught.value).startswith(
        f"{tmp_path} holds a run started with --arch johnson (now tiny); rerun it with its "
    )


def test_a_distillation_without_a_recorded_arch_resumes_with_the_one_given(tmp_path):
    """Distillation had --arch from its start, so none of its runs trained the seed net by
    default: an absent arch is a newer option's absence, and takes the value given now."""
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"a teacher's bytes")
    run_dir = tmp_path / "student"
    run_dir.mkdir()
    config = DistillConfig(teacher=str(teacher), data="d", output=str(run_dir), arch="live")
    saved = {**dataclasses.asdict(config), "data_seed": 9}
    del saved["arch"]
    (run_dir / "config.json").write_text(json.dumps(saved))
    write_checkpoint(str(run_dir), 3)
    for arch in ("live", "tiny"):
        assert previous_run(str(run_dir), dataclasses.replace(config, arch=arch)) == saved


def test_a_distillation_recorded_with_the_style_options_resumes(tmp_path):
    """Distillation runs once recorded style training's options too (and a style size);
    they are not its options, so they neither block nor change a resume."""
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"a teacher's bytes")
    config = DistillConfig(teacher=str(teacher), data="d", output=str(tmp_path / "student"))
    older = {"style": None, "style_size": None, "content_weight": 1e-4, "style_weight": 3e-8}
    saved = {**dataclasses.asdict(config), **older, "tv_weight": 0.0, "style_size_used": 256}
    os.makedirs(config.output)
    (tmp_path / "student" / "config.json").write_text(json.dumps({**saved, "data_seed": 9}))
    write_checkpoint(config.output, 3)
    assert previous_run(config.output, config)["style_size_used"] == 256
    with pytest.raises(KstyleError, match="--image-size 256 \\(now 128\\)"):
        previous_run(config.output, dataclasses.replace(config, image_size=128))


@pytest.mark.parametrize(
    "cluster, task, folder",
    [
        (None, None, ""),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, ""),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, "worker-1"),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, ""),
        ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, "worker-0"),
    ],
)
def test_every_worker_but_the_chief_has_a_folder_of_its_own(monkeypatch, cluster, task, folder):
    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert worker_dir("runs/x") == (os.path.join("runs/x", folder) if folder else "runs/x")


def test_config_json_holds_the_options_and_what_the_run_made_of_them(tmp_path):
    config = TrainConfig(style="styles/wave.jpg", image_size=64, seed=3)
    data = types.SimpleNamespace(description="8 images from d", seed=3, steps_per_epoch=2)
    write_run_config(str(tmp_path), config, data, 4, "default strategy (1 replica(s))")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in dataclasses.asdict(config)} == dataclasses.asdict(config)
    assert saved["run_dir"] == os.path.join("runs", "wave") and saved["style_size_used"] == 64
    assert (saved["data_seed"], saved["steps_per_epoch"], saved["total_steps"]) == (3, 2, 4)
    assert saved["epochs"] is None and saved["epochs_used"] == 2  # as given; as run
    write_run_config(str(tmp_path), config, data, 5, "default strategy (1 replica(s))")
    assert json.loads((tmp_path / "config.json").read_text())["epochs_used"] == 3  # partial
    assert saved["data_description"] == "8 images from d"
    assert saved["strategy_used"] == "default strategy (1 replica(s))"
    assert set(saved["versions"]) == {"kstyle", "python", "tensorflow", "keras"}
    assert isinstance(saved["command"], list)
    assert saved["smoke_test"] is False and "note" not in saved  # the ImageNet loss net
    smoke = dataclasses.replace(config, vgg_weights="random")
    write_run_config(str(tmp_path), smoke, data, 4, "default strategy (1 replica(s))")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["smoke_test"] is True
    assert saved["note"] == "untrained loss network: smoke test only"


def test_a_distillations_config_json_holds_its_own_options_only(tmp_path):
    teacher = tmp_path / "teacher.keras"
    teacher.write_bytes(b"a teacher's bytes")
    config = DistillConfig(teacher=str(teacher), data="d", output=str(tmp_path / "s"))
    data = types.SimpleNamespace(description="8 images from d", seed=3, steps_per_epoch=2)
    write_run_config(str(tmp_path), config, data, 4, "default strategy (1 replica(s))")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in dataclasses.asdict(config)} == dataclasses.asdict(config)
    assert saved["teacher_model"] == str(teacher) and saved["arch"] == "tiny"
    style_only = {"style", "style_size", "content_weight", "style_weight", "tv_weight"}
    assert not (style_only | {"style_size_used"}) & set(saved)


@pytest.mark.parametrize("state", ["resumable", "finished", "config only"])
def test_a_smoke_test_and_a_real_run_never_continue_each_other(tmp_path, state):
    config = TrainConfig(style="s.png", data="d", output=str(tmp_path), vgg_weights="random")
    weights_file = dataclasses.replace(config, vgg_weights="vgg16.weights.h5")
    # check_loss_net compares the recorded option text; no loss net is built or downloaded
    imagenet = dataclasses.replace(config, vgg_weights="imagenet")
    for everything in (config, weights_file, imagenet):
        check_loss_net(str(tmp_path), everything)  # an empty folder: any run
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    if state == "resumable":
        write_checkpoint(str(tmp_path), 3)
    elif state == "finished":
        (tmp_path / "summary.json").write_text('{"steps": 6, "smoke_test": true}')
    check_loss_net(str(tmp_path), config)  # a smoke test may continue a smoke test
    for real in (weights_file, imagenet):
        with pytest.raises(KstyleError) as caught:
            check_loss_net(str(tmp_path), real)
        assert str(caught.value) == (
            f"{tmp_path} holds a smoke-test run (--vgg-weights random, an untrained loss "
            f"network) that a run with --vgg-weights {real.vgg_weights} must not continue; "
            "pass --restart to train from scratch, or choose another --output"
        )

    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(weights_file)))
    check_loss_net(str(tmp_path), weights_file)
    check_loss_net(str(tmp_path), imagenet)  # another trained loss net: previous_run's matter
    with pytest.raises(KstyleError) as caught:
        check_loss_net(str(tmp_path), config)
    assert str(caught.value) == (
        f"{tmp_path} holds a run trained with --vgg-weights vgg16.weights.h5; a --vgg-weights "
        "random smoke test must not continue it or pass for it: pass --restart to replace it "
        "(its model is deleted), or choose another --output"
    )
