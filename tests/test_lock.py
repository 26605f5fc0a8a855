"""kstyle.lock: one process owns a run folder or an output; a killed one leaves no lock.

The holders are real processes (a small helper that takes the locks through kstyle.lock and
sleeps), since what is tested is what the kernel does between processes.
"""

import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, assert_one_line_error, random_image, run_in_process, write_image_folder
from PIL import Image

from kstyle.errors import KstyleError
from kstyle.lock import holder_pid, output_lock, output_lock_path, run_dir_lock

# Takes the locks named on its command line (run:FOLDER, output:PATH or folder:FOLDER, an output
# folder), says so, and sleeps.
HOLDER = """
import contextlib, sys, time
from kstyle.lock import output_lock, run_dir_lock

with contextlib.ExitStack() as stack:
    for spec in sys.argv[1:]:
        kind, path = spec.split(":", 1)
        lock = run_dir_lock(path) if kind == "run" else output_lock(path, kind == "folder")
        stack.enter_context(lock)
    print("locked", flush=True)
    time.sleep(600)
"""


def start_holder(*specs):
    """A process that holds the locks of ``specs`` once this returns."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, specs)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


@pytest.fixture
def holders():
    started = []
    yield lambda *specs: started.append(start_holder(*specs)) or started[-1]
    for holder in started:
        holder.kill()
        holder.wait()


def refusal(output, pid):
    return (
        f"error: --output {output} is in use by another kstyle process (PID {pid}); wait for "
        "it to end (or stop it), or choose another --output"
    )


# Runs train and distill into a held folder (argv[1]) in one process: each must be refused
# before TensorFlow (or Keras) is imported, --restart and --demo too.
REFUSED = """
import sys
from kstyle.cli.main import main

run, style, data, teacher = sys.argv[1:]
common = ["--data", data, "--output", run, "--vgg-weights", "random"]
codes = [
    main(["train", "--style", style, *common]),
    main(["train", "--style", style, "--restart", *common]),
    main(["distill", "--teacher", teacher, *common]),
    main(["train", "--demo", "--output", run]),  # before the demo set is written into it
]
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))
print(codes, heavy)
"""


def test_training_into_a_held_folder_is_refused_before_any_work(
    tmp_path, holders, saved_model_path
):
    """Valid inputs (so that only the lock can refuse): a style image, a data folder and a
    teacher."""
    style, data = tmp_path / "style.png", tmp_path / "data"
    Image.fromarray(random_image(32, 32, seed=6)).save(style)
    write_image_folder(str(data), count=2, size=(32, 32))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"versions": {"kstyle": "0"}}')  # the holder's run
    (run_dir / "history.csv").write_text("step\n1\n")
    holder = holders(f"run:{run_dir}")
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-c", REFUSED, str(run_dir), str(style), str(data), saved_model_path],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.stdout == "[2, 2, 2, 2] []\n", result.stderr[-2000:]
    assert result.stderr.splitlines() == [refusal(run_dir, holder.pid)] * 4
    assert sorted(os.listdir(run_dir)) == [".kstyle.lock", "config.json", "history.csv"]
    # --restart deleted nothing, the holder's lock included
    assert (run_dir / "history.csv").read_text() == "step\n1\n"
    assert (run_dir / ".kstyle.lock").read_text() == f"{holder.pid}\n"


def test_the_library_call_is_refused_too(tmp_path, holders):
    """``kstyle.run.train`` (a notebook's call) takes the lock itself, before it reads
    anything: the style image here does not even exist."""
    from kstyle.errors import KstyleError
    from kstyle.run import TrainConfig, train

    run_dir = tmp_path / "run"
    holder = holders(f"run:{run_dir}")
    config = TrainConfig(style=str(tmp_path / "missing.png"), output=str(run_dir), steps=1)
    with pytest.raises(KstyleError) as caught:
        train(config, printer=lambda line: None)
    assert f"error: {caught.value}" == refusal(run_dir, holder.pid)


def test_stylize_and_export_refuse_an_output_being_written(tmp_path, holders, saved_model_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(random_image(32, 40, seed=4)).save(photo)
    target, folder = tmp_path / "out" / "styled.png", tmp_path / "export"
    holder = holders(f"output:{target}", f"folder:{folder}")
    result = run_in_process("stylize.py", photo, "--model", saved_model_path, "--output", target)
    assert assert_one_line_error(result) == refusal(target, holder.pid)
    assert not target.exists()
    result = run_in_process("export.py", saved_model_path, "--format", "onnx", "--output", folder)
    assert assert_one_line_error(result) == refusal(folder, holder.pid)
    assert os.listdir(folder) == [".kstyle.lock"]  # a folder output's lock is inside it
    assert output_lock_path(str(target)) == str(tmp_path / "out" / ".styled.png.kstyle.lock")
    # names too long for the lock file's keep their start and a hash of the whole
    long_names = [output_lock_path(str(tmp_path / ("y" * 246 + end))) for end in (".png", ".jpg")]
    assert long_names[0] != long_names[1]
    assert all(len(os.path.basename(name).encode()) <= 255 for name in long_names)


def test_a_killed_holder_leaves_no_lock(tmp_path, holders, saved_model_path):
    """SIGKILL runs no clean-up: the lock files stay, with the dead PID, and the next
    commands lock them again and run."""
    data, run_dir, target = tmp_path / "data", tmp_path / "run", tmp_path / "styled.png"
    write_image_folder(str(data), count=4, size=(36, 36))
    Image.fromarray(random_image(32, 32, seed=5)).save(tmp_path / "style.png")
    holder = holders(f"run:{run_dir}", f"output:{target}")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run_dir / ".kstyle.lock").read_text() == f"{holder.pid}\n"  # left behind
    trained = run_in_process(
        "train.py", "--style", tmp_path / "style.png", "--data", data, "--output", run_dir,
        "--vgg-weights", "random", "--image-size", "32", "--batch-size", "2", "--steps", "2",
        "--plot-every", "0", "-q",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert trained.stdout.startswith("done: 2 steps")
    assert not (run_dir / ".kstyle.lock").exists()  # released and removed at the end
    styled = run_in_process(
        "stylize.py", tmp_path / "style.png", "--model", saved_model_path, "--output", target
    )
    assert styled.returncode == 0, styled.stderr[-2000:]
    assert target.is_file() and not os.path.exists(output_lock_path(str(target)))


def test_a_process_may_take_its_own_lock_again_and_other_opens_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    with run_dir_lock(str(run_dir)):
        with run_dir_lock(str(run_dir)):  # nested (the CLI, then train()): the same holder
            assert holder_pid(str(run_dir / ".kstyle.lock")) == os.getpid()
        assert (run_dir / ".kstyle.lock").exists()  # still held by the outer block
    assert not run_dir.exists()
    # the lock is the open file's, not the process's: the kernel refuses a second open file
    # of this process too (what another process gets, shown without one)
    import fcntl

    with output_lock(str(tmp_path / "a.png")):
        descriptor = os.open(output_lock_path(str(tmp_path / "a.png")), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)


def test_outputs_lock_only_what_they_write(tmp_path, holders, saved_model_path):
    """Two pictures stylized into one folder at once are two outputs: neither is refused. A
    folder output's lock is inside it, so a parent that kstyle may not write is never
    touched."""
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for seed, photo in enumerate(photos):
        Image.fromarray(random_image(32, 32, seed=seed)).save(photo)
    out = tmp_path / "out"
    holder = holders(f"output:{out / 'a.png'}")
    result = run_in_process("stylize.py", photos[1], "--model", saved_model_path, "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == [".a.png.kstyle.lock", "b.png"]
    result = run_in_process("stylize.py", photos[0], "--model", saved_model_path, "--output", out)
    assert assert_one_line_error(result) == refusal(out / "a.png", holder.pid)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png", "out"]


def test_a_lock_removes_every_folder_it_made_and_other_threads_are_refused(tmp_path):
    import threading

    deep = tmp_path / "new" / "a" / "b"
    refused = []

    def other_thread():
        try:
            with output_lock(str(deep), folder=True):
                refused.append(False)
        except KstyleError as error:
            refused.append(str(error))

    with output_lock(str(deep), folder=True):
        assert os.listdir(deep) == [".kstyle.lock"]
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert refused == [f"--output {deep} is in use by another kstyle process (PID {os.getpid()}); "
                       "wait for it to end (or stop it), or choose another --output"]  # fmt: skip
    assert os.listdir(tmp_path) == []  # new/, new/a and new/a/b were made for the lock
    (tmp_path / "new").mkdir()
    with output_lock(str(tmp_path / "new" / "a"), folder=True):
        (tmp_path / "new" / "kept.txt").write_text("the user's")
    assert os.listdir(tmp_path / "new") == ["kept.txt"]  # a/ was made and is empty: removed
