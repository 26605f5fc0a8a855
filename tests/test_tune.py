"""kstyle tune: measuring candidate paths, refusing the ones whose results differ, the store of
choices, and stylize/train applying a stored choice."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, random_image, randomize_norms, run_in_process
from PIL import Image


class FakeClock:
    """A clock that only the fake paths move: each call of a path costs what the test says."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Costly:
    """A stylize path that costs ``cost`` fake seconds and adds ``shift`` levels to the output
    of the real ``path`` (a shift makes a deliberately wrong candidate)."""

    def __init__(self, path, clock, cost, shift=0.0):
        self.path, self.clock, self.cost, self.shift = path, clock, cost, shift

    def run(self, model, batch):
        self.clock.now += self.cost
        return self.path.run(model, batch) + self.shift


@pytest.fixture(autouse=True)
def default_path_after():
    """Each test here may leave a tuned choice in use; later tests get the default path."""
    yield
    from kstyle.stylize_paths import use_choice

    use_choice(None)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """A ``tiny`` net with random norm parameters, saved as a .keras file."""
    import keras

    from kstyle.transform_net import build_transform_net

    keras.utils.set_random_seed(5)
    net = randomize_norms(build_transform_net("tiny"), seed=5)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    net.save(path)
    return str(path)


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    """An empty cache folder of this test's own."""
    monkeypatch.setenv("KSTYLE_CACHE_DIR", str(tmp_path / "cache"))
    from kstyle.tune_store import store_path

    return store_path()


def fake_worker(costs, wrong=()):
    """A stand-in for the measuring process: the real paths, run in this process on the fake
    clock at ``costs[(onednn, name)]`` seconds a call; the names in ``wrong`` are shifted by
    3 levels."""

    def worker(request, onednn):
        from kstyle.stylize_paths import PATHS
        from kstyle.transform_net import load_transform_net
        from kstyle.tune_worker import measure_stylize

        clock = FakeClock()
        paths = {
            name: Costly(PATHS[name], clock, costs[onednn, name], 3.0 if name in wrong else 0)
            for name in request["paths"]
        }
        model = load_transform_net(request["model"])
        rows = measure_stylize(model, request["sizes"], paths, request["folder"], clock)
        return {"rows": rows}

    return worker


def test_tune_picks_the_fastest_candidate_on_a_fake_timer_and_stores_it(tiny_file, store_path):
    from kstyle.tune_store import TunedStore, network_id
    from kstyle.tuning import STYLIZE_CANDIDATES, onednn_settings, tune_stylize

    reference, other = onednn_settings("stylize")
    costs = {(setting, name): 5.0 for setting in (reference, other) for name in STYLIZE_CANDIDATES}
    costs[reference, "tensorflow-xla"] = 3.0
    costs[other, "tensorflow-unfused"] = 2.0  # the fastest: the other oneDNN setting wins
    costs[reference, "litert"] = 4.0
    choice = tune_stylize(tiny_file, [32, 48], worker=fake_worker(costs), log=lambda line: None)
    assert choice["onednn"] == other
    assert [(size["pixels"], size["path"]) for size in choice["sizes"]] == [
        (32 * 32, "tensorflow-unfused"),
        (48 * 48, "tensorflow-unfused"),
    ]
    assert [size["seconds"] for size in choice["sizes"]] == [2.0, 2.0]
    assert [size["default_seconds"] for size in choice["sizes"]] == [5.0, 5.0]
    assert [size["tensorflow_path"] for size in choice["sizes"]] == ["tensorflow-unfused"] * 2
    measured = {(row["onednn"], row["path"], row["pixels"]): row for row in choice["rows"]}
    # LiteRT does not depend on TensorFlow's oneDNN switch: measured once, in the first process
    assert [key for key in measured if key[1] == "litert"] == [(None, "litert", 1024)] + [
        (None, "litert", 2304)
    ]
    assert all(row["difference"] <= 1 for row in choice["rows"]), choice["rows"]
    assert measured[reference, "tensorflow", 1024]["difference"] == 0
    store = TunedStore.read()
    store.put("stylize", network_id(tiny_file), choice, "tiny")
    assert TunedStore.read(store_path).choice("stylize", network_id(tiny_file)) == json.loads(
        json.dumps(choice)
    )


def test_a_candidate_whose_output_differs_is_never_chosen(tiny_file, store_path):
    from kstyle.tuning import STYLIZE_CANDIDATES, onednn_settings, tune_stylize

    reference, other = onednn_settings("stylize")
    costs = {(setting, name): 5.0 for setting in (reference, other) for name in STYLIZE_CANDIDATES}
    costs[reference, "tensorflow-unfused"] = 1.0  # fastest by far, but 3 levels off
    costs[other, "tensorflow-unfused"] = 1.0
    costs[reference, "tensorflow-xla"] = 4.0
    worker = fake_worker(costs, wrong={"tensorflow-unfused"})
    choice = tune_stylize(tiny_file, [32], worker=worker, log=lambda line: None)
    wrong = [row for row in choice["rows"] if row["path"] == "tensorflow-unfused"]
    assert [row["difference"] for row in wrong] == [3, 3]
    assert choice["sizes"][0]["path"] == "tensorflow-xla" and choice["onednn"] == reference


def test_each_onednn_setting_is_checked_against_the_reference_output(tiny_file, store_path):
    from kstyle.tuning import STYLIZE_CANDIDATES, onednn_settings, tune_stylize

    reference, other = onednn_settings("stylize")
    costs = {(setting, name): 5.0 for setting in (reference, other) for name in STYLIZE_CANDIDATES}
    for name in STYLIZE_CANDIDATES:
        costs[other, name] = 1.0  # the other setting is faster at everything, and 3 levels off

    def worker(request, onednn):
        shifted = set(request["paths"]) if onednn == other else set()
        return fake_worker(costs, wrong=shifted)(request, onednn)

    choice = tune_stylize(tiny_file, [32], worker=worker, log=lambda line: None)
    assert {row["difference"] for row in choice["rows"] if row["onednn"] == other} == {3}
    assert choice["onednn"] == reference and choice["sizes"][0]["seconds"] == 5.0


def test_pick_stylize_keeps_the_fastest_tensorflow_path_beside_litert():
    from kstyle.tuning import pick_stylize

    def row(path, onednn, seconds, difference=0, pixels=4096):
        return dict(path=path, onednn=onednn, seconds=seconds, difference=difference, pixels=pixels)

    rows = [
        row("tensorflow", True, 3.0),
        row("tensorflow-xla", True, 2.5),
        row("litert", None, 1.0),
        row("tensorflow", False, 2.0),
        row("tensorflow-unfused", False, 1.5, difference=2),  # fast but off by 2 levels
        {"path": "tensorflow-xla", "onednn": False, "pixels": 4096, "error": "no XLA here"},
    ]
    choice = pick_stylize(rows, reference_onednn=True)
    (size,) = choice["sizes"]
    assert (choice["onednn"], size["path"], size["seconds"]) == (True, "litert", 1.0)
    # the totals tie (LiteRT under either setting): the reference setting is kept
    # the fallback compiles nothing per size: XLA, though faster, is not one
    assert size["tensorflow_path"] == "tensorflow" and size["default_seconds"] == 3.0
    rows[2]["difference"] = 5  # LiteRT off too: oneDNN off's plain TensorFlow wins
    choice = pick_stylize(rows, reference_onednn=True)
    assert (choice["onednn"], choice["sizes"][0]["path"]) == (False, "tensorflow")
    assert pick_stylize([row("tensorflow", True, 1.0, difference=None)], True) is None
    crashed = {"path": "litert", "onednn": None, "pixels": 4000, "error": "the process stopped"}
    assert pick_stylize([*rows, crashed], True) is not None  # a size only a crash names


def test_pick_train_refuses_a_step_whose_losses_differ_and_picks_per_precision():
    from kstyle.tuning import TRAIN_TOLERANCE, pick_train

    def row(onednn, xla, precision, seconds, losses):
        return dict(onednn=onednn, xla=xla, precision=precision, seconds=seconds, losses=losses)

    rows = [
        row(True, False, "off", 3.0, [100.0, 90.0]),
        row(True, True, "off", 2.5, [100.0, 90.0 * (1 + TRAIN_TOLERANCE["off"] / 2)]),
        row(False, False, "off", 1.0, [100.0, 95.0]),  # faster, but its second loss differs
        row(True, False, "bfloat16", 2.0, [100.5, 90.5]),
        row(False, True, "bfloat16", 0.5, [130.0, 90.0]),  # far off: never chosen
    ]
    choice = pick_train(rows)
    assert choice["by_precision"] == {
        "off": {"onednn": True, "xla": True, "seconds": 2.5},
        "bfloat16": {"onednn": True, "xla": False, "seconds": 2.0},
    }
    assert choice["precision"] == "bfloat16" and choice["default_seconds"] == 3.0
    rows[3]["seconds"] = 2.6  # bfloat16 slower than the fastest float32: auto keeps float32
    assert pick_train(rows)["precision"] == "off"
    assert pick_train([{**rows[0], "error": "OOM"}, rows[1]]) is None
    diverged = row(True, False, "bfloat16", 0.1, [100.0, float("nan")])
    assert pick_train([*rows, diverged])["by_precision"]["bfloat16"]["seconds"] == 2.6


def test_a_candidate_that_kills_the_process_is_recorded_and_the_rest_measured(monkeypatch):
    from kstyle import tuning
    from kstyle.errors import KstyleError

    request = {"task": "train", "candidates": [[False, "off"], [True, "off"], [False, "bfloat16"]]}
    calls = []

    def once(sent, onednn):  # the second candidate aborts its process
        calls.append(sent["skip"])
        if not sent["skip"]:
            return -6, [{"item": [False, "off"], "seconds": 1.0}], "Aborted (core dumped)"
        return 0, [{"item": [False, "bfloat16"], "seconds": 0.5}], ""

    monkeypatch.setattr(tuning, "_run_worker_once", once)
    rows = tuning.run_worker(request, True)["rows"]
    assert [row["item"] for row in rows] == request["candidates"]
    assert rows[1] == {
        "xla": True,
        "precision": "off",
        "item": [True, "off"],
        "error": "the process stopped: Aborted (core dumped)",
    }
    assert calls == [[], [[False, "off"], [True, "off"]]]
    monkeypatch.setattr(tuning, "_run_worker_once", lambda sent, onednn: (1, None, "no module"))
    with pytest.raises(KstyleError, match="measuring with oneDNN on failed: no module"):
        tuning.run_worker(request, True)


def test_the_worker_measures_a_training_step_in_each_precision():
    from kstyle.tune_worker import measure_train
    from kstyle.tuning import TRAIN_TOLERANCE, loss_difference

    job = {"arch": "tiny", "padding": "zeros", "image_size": 32, "batch_size": 1}
    rows = measure_train(job, [(False, "off"), (False, "bfloat16")])
    assert [(row["xla"], row["precision"]) for row in rows] == [(False, "off"), (False, "bfloat16")]
    assert all("error" not in row and row["seconds"] > 0 for row in rows), rows
    first, second = rows[0]["losses"]
    assert np.isfinite([first, second]).all() and first != second  # the step changed the net
    difference = loss_difference(rows[1], rows[0])
    assert 0 < difference < TRAIN_TOLERANCE["bfloat16"], rows


def _write_choice(path, job, choice, machine=None, task="stylize"):
    from kstyle.tune_store import TunedStore

    TunedStore.read(path).put(task, job, choice, "test", machine=machine)


def _stylize(tiny_file, source, target, *flags):
    """Runs ``stylize.py -v`` in this process; the stderr and the pictures it wrote, as int
    arrays by file name (one picture for a file, each of a folder)."""
    result = run_in_process(
        "stylize.py", "--model", tiny_file, source, "--output", target, "-v", *flags
    )
    assert result.returncode == 0, result.stderr[-2000:]
    if not os.path.isdir(target):
        return np.asarray(Image.open(target)).astype(int), result.stderr
    files = sorted(os.listdir(target))
    pictures = {name: np.asarray(Image.open(target / name)).astype(int) for name in files}
    return pictures, result.stderr


@pytest.mark.parametrize("path", ["tensorflow-unfused-xla", "tensorflow-blocked", "litert"])
def test_stylize_with_a_stored_choice_gives_the_same_pixels(tiny_file, store_path, tmp_path, path):
    from kstyle.stylize_paths import PATHS, chosen_path, use_choice
    from kstyle.tune_store import network_id

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in (2, 3):  # the same size twice: LiteRT converts for the second, then runs
        Image.fromarray(random_image(40, 52, seed=seed)).save(photos / f"{seed}.png")
    default, said = _stylize(tiny_file, photos, tmp_path / "default")
    assert "stylizing on the default path: no choice of kstyle tune" in said
    sizes = [
        {"pixels": 16 * 16, "path": "tensorflow"},
        {"pixels": 48 * 48, "path": path, "tensorflow_path": "tensorflow-unfused"},
    ]
    _write_choice(store_path, network_id(tiny_file), {"onednn": True, "sizes": sizes})
    tuned, said = _stylize(tiny_file, photos, tmp_path / "tuned")
    assert f"stylizing on the choice of kstyle tune in {store_path}" in said, said
    assert tuned.keys() == default.keys() and len(tuned) == 2
    for name, picture in tuned.items():
        assert np.abs(picture - default[name]).max() <= 1, name
    assert chosen_path(40 * 52) is PATHS["tensorflow"]  # the command's choice ended with it
    use_choice({"onednn": True, "sizes": sizes})
    assert chosen_path(40 * 52) is PATHS[path]  # the size nearest 40 x 52 chose it
    assert chosen_path(40 * 52, fallback=True) is PATHS["tensorflow-unfused"]
    assert chosen_path(10 * 10) is PATHS["tensorflow"]
    converted = os.path.join(os.path.dirname(store_path), "litert")
    assert len(os.listdir(converted) if os.path.isdir(converted) else []) == (path == "litert")


def test_a_damaged_or_foreign_store_is_ignored_with_a_warning(tiny_file, store_path, tmp_path):
    from kstyle.machine import machine_record
    from kstyle.stylize_paths import DEFAULT_PATH, chosen_path
    from kstyle.tune_store import network_id

    source = tmp_path / "photo.png"
    Image.fromarray(random_image(24, 24, seed=3)).save(source)
    os.makedirs(os.path.dirname(store_path))
    with open(store_path, "w") as file:
        file.write('{"format": "kstyle tuned paths 1", "entries": [{"task": ')
    _, said = _stylize(tiny_file, source, tmp_path / "a.png")
    assert f"warning: ignoring the tuned choices in {store_path}: cannot read it" in said
    with open(store_path, "w") as file:
        json.dump({"format": "someone else's", "entries": []}, file)
    _, said = _stylize(tiny_file, source, tmp_path / "b.png")
    assert "it is not a kstyle store" in said
    os.remove(store_path)
    other = {**machine_record(), "cpu": "Another CPU (GenuineIntel family 6 model 207)"}
    choice = {"onednn": False, "sizes": [{"pixels": 576, "path": "litert"}]}
    _write_choice(store_path, network_id(tiny_file), choice, machine=other)
    _, said = _stylize(tiny_file, source, tmp_path / "c.png")
    assert "measured on another CPU or with other library versions" in said, said
    assert "stylizing on the default path" in said and chosen_path(576) is DEFAULT_PATH
    info = run_in_process("kstyle info")
    assert "tuned paths: ignoring the tuned choices" in info.stdout, info.stdout


def test_mixed_precision_auto_follows_the_store_and_a_resumed_run(store_path, tmp_path):
    from kstyle.config import TrainConfig
    from kstyle.tuning import apply_tuned_training, train_job

    def resolved(**options):
        config = TrainConfig(style="s.png", output=str(tmp_path / "run"), **options)
        tuned = apply_tuned_training(config)
        return config.mixed_precision, config.jit_compile, tuned

    assert resolved(mixed_precision="auto") == ("off", "auto", None)  # no store: float32
    by_precision = {
        "off": {"onednn": True, "xla": False, "seconds": 3.0},
        "bfloat16": {"onednn": True, "xla": True, "seconds": 2.0},
    }
    choice = {"precision": "bfloat16", "by_precision": by_precision, "default_seconds": 3.0}
    _write_choice(store_path, train_job("johnson", "zeros"), choice, task="train")
    assert resolved(mixed_precision="auto") == ("bfloat16", "on", by_precision["bfloat16"])
    assert resolved() == ("off", "off", by_precision["off"])  # XLA as measured for float32
    assert resolved(jit_compile="on") == ("off", "on", by_precision["off"])
    assert resolved(arch="tiny", mixed_precision="auto") == ("off", "auto", None)
    os.makedirs(tmp_path / "run")
    with open(tmp_path / "run" / "config.json", "w") as file:
        json.dump({"mixed_precision": "off"}, file)
    assert resolved(mixed_precision="auto")[0] == "off"  # a resumed run keeps its own
    assert resolved(mixed_precision="auto", restart=True)[0] == "bfloat16"
    from kstyle.distill_config import DistillConfig

    student = DistillConfig(teacher="t.keras", arch="johnson", mixed_precision="auto")
    assert apply_tuned_training(student) is None  # a distillation step is not what tune measured
    assert (student.mixed_precision, student.jit_compile) == ("off", "auto")


def test_kstyle_tune_train_stores_what_the_measuring_processes_report(store_path, monkeypatch):
    from kstyle import tuning

    def worker(request, onednn):  # as the processes report: bfloat16 with oneDNN the fastest
        assert (request["arch"], request["image_size"], request["batch_size"]) == ("tiny", 64, 2)
        rows = []
        for xla, precision in request["candidates"]:
            seconds = (0.5 if precision == "bfloat16" else 1.0) + xla + (not onednn)
            loss = 100.0 if precision == "off" else 100.3
            rows.append(dict(xla=xla, precision=precision, seconds=seconds, first=seconds))
            rows[-1].update(timed=3, losses=[loss, loss - 10], item=[xla, precision])
        return {"rows": rows}

    monkeypatch.setattr(tuning, "run_worker", worker)
    result = run_in_process(
        "kstyle tune",
        "--task",
        "train",
        "--arch",
        "tiny",
        "--image-size",
        "64",
        "--batch-size",
        "2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train tiny, zeros padding (64², batch 2):" in result.stdout
    assert "--mixed-precision auto: bfloat16" in result.stdout
    from kstyle.tune_store import TunedStore

    choice = TunedStore.read(store_path).choice("train", tuning.train_job("tiny", "zeros"))
    assert choice["by_precision"]["bfloat16"] == {"onednn": True, "xla": False, "seconds": 0.5}
    assert choice["precision"] == "bfloat16"


def test_a_store_entry_of_the_wrong_shape_is_damaged_and_an_h5_model_gets_no_choice(tmp_path):
    from kstyle.machine import machine_record
    from kstyle.tune_store import STORE_FORMAT, TunedStore
    from kstyle.tuning import stylize_choice

    sizes = [{"pixels": 1024, "path": "litert", "tensorflow_path": []}]
    entry = {"task": "stylize", "job": "x", "machine": machine_record()}
    for choice in (
        {"onednn": True, "sizes": sizes},
        {"onednn": True, "sizes": [{"pixels": 1e300}]},
    ):
        path = tmp_path / "tuned.json"
        path.write_text(
            json.dumps({"format": STORE_FORMAT, "entries": [{**entry, "choice": choice}]})
        )
        assert TunedStore.read(str(path)).problem == "its entries are damaged"
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert stylize_choice(str(h5), TunedStore.read(str(path))) is None


def test_a_multi_worker_run_takes_no_tuned_choice(store_path, tmp_path, monkeypatch):
    from kstyle.config import TrainConfig
    from kstyle.tuning import apply_tuned_training, train_job

    by_precision = {"bfloat16": {"onednn": True, "xla": True, "seconds": 2.0}}
    choice = {"precision": "bfloat16", "by_precision": by_precision, "default_seconds": 3.0}
    _write_choice(store_path, train_job("johnson", "zeros"), choice, task="train")
    cluster = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    config = TrainConfig(style="s.png", output=str(tmp_path / "run"), mixed_precision="auto")
    assert apply_tuned_training(config) is None
    assert (config.mixed_precision, config.jit_compile) == ("off", "auto")


def test_kstyle_tune_measures_stores_and_info_lists_it(tmp_path):
    cache = tmp_path / "cache"
    environment = {**os.environ, "KSTYLE_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "kstyle", "tune", "--task", "stylize", "--arch", "tiny"]
    done = subprocess.run(
        [*command, "--sizes", "32"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "32² tensorflow, oneDNN on:" in done.stdout and "32² litert:" in done.stdout
    assert "chosen: oneDNN" in done.stdout and f"stored in {cache / 'tuned.json'}" in done.stdout
    with open(cache / "tuned.json") as file:
        (entry,) = json.load(file)["entries"]
    assert entry["task"] == "stylize" and entry["label"] == "stylize tiny (zeros padding)"
    assert entry["choice"]["sizes"][0]["pixels"] == 32 * 32
    info = subprocess.run(
        [sys.executable, "-m", "kstyle", "info"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
    )
    assert "tuned paths (" in info.stdout and "stylize tiny (zeros padding)" in info.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sizes", "8"], "--sizes must be comma-separated sides from 16 to 4096"),
        (["--sizes", "256,8192"], "--sizes must be comma-separated sides from 16 to 4096"),
        (["--sizes", "a,b"], "--sizes must be comma-separated sides"),
        (["--image-size", "8"], "--image-size is too small: 8"),
        (["--model", "missing.keras"], "model not found: missing.keras"),
    ],
)
def test_kstyle_tune_refuses_bad_arguments_in_one_line(flags, message):
    assert_one_line_error(run_in_process("kstyle tune", *flags), message)
