"""kstyle.smoke: a smoke test's mark travels with its model file; commands print its note.

The CLI's notes (stylize; distill's inherited mark) are in test_distill.py, on a student of a
smoke teacher; the export sidecars' in test_export_writer.py.
"""

import json
import os
import shutil

import numpy as np
from conftest import run_in_process

from kstyle.callbacks import save_model_atomically
from kstyle.export.writer import describe_model
from kstyle.smoke import (
    SMOKE_TEST_NOTE,
    mark_model_file,
    model_file_marks,
    smoke_note,
    smoke_notes,
)
from kstyle.transform_net import build_transform_net, load_transform_net

NOTE = f"{SMOKE_TEST_NOTE} ({{}}); the model learned no style"


def test_the_mark_is_in_the_file_and_the_file_loads_as_before(tmp_path):
    net = build_transform_net("tiny")
    marked, plain = tmp_path / "marked.keras", tmp_path / "plain.keras"
    save_model_atomically(net, str(marked), marks={"smoke_test": True, "note": "n"})
    save_model_atomically(net, str(plain))
    assert model_file_marks(str(marked)) == {"smoke_test": True, "note": "n"}
    assert model_file_marks(str(plain)) is None
    assert sorted(os.listdir(tmp_path)) == ["marked.keras", "plain.keras"]  # no temporary left
    for a, b in zip(load_transform_net(str(marked)).get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # a copy anywhere keeps it
    copy = tmp_path / "elsewhere" / "starry.keras"
    copy.parent.mkdir()
    shutil.copyfile(marked, copy)
    assert smoke_note(str(copy)) == NOTE.format(copy)
    assert smoke_note(str(plain)) is None


def test_an_unmarked_model_in_a_smoke_run_directory_is_one(tmp_path):
    """Models saved before the mark existed: their run's config.json says it (the mark, where
    there is one, is the model's own word)."""
    net = build_transform_net("tiny")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    net.save(run_dir / "model.keras")
    config = {"smoke_test": True, "versions": {"kstyle": "0"}}
    (run_dir / "config.json").write_text(json.dumps(config))
    model = run_dir / "model.keras"
    assert smoke_note(str(run_dir)) == smoke_note(str(model)) == NOTE.format(model)
    mark_model_file(str(model), {"smoke_test": False})  # the model's word wins
    assert smoke_note(str(run_dir)) is None
    (run_dir / "config.json").write_text(json.dumps({"smoke_test": True}))  # not kstyle's
    net.save(run_dir / "model.keras")
    assert smoke_note(str(run_dir)) is None


def test_what_is_not_a_marked_model_has_no_note(tmp_path):
    (tmp_path / "notes.keras").write_text("not a zip")
    (tmp_path / "comment.keras").write_bytes(b"")
    for path in ("notes.keras", "comment.keras", "missing.keras", "empty-folder"):
        assert smoke_note(str(tmp_path / path)) is None
    assert model_file_marks(str(tmp_path / "notes.keras")) is None


def test_smoke_notes_and_the_export_description_of_a_folder_of_runs(tmp_path):
    net = build_transform_net("tiny")
    for name, smoke in (("a", True), ("b", False), ("c", True)):
        os.makedirs(tmp_path / "runs" / name)
        marks = {"smoke_test": smoke}
        save_model_atomically(net, str(tmp_path / "runs" / name / "model.keras"), marks=marks)
    (tmp_path / "runs" / "notes.txt").write_text("x")
    loose = str(tmp_path / "runs" / "loose.keras")  # not a run: export would not take it
    save_model_atomically(net, loose, marks={"smoke_test": True})
    expected = [NOTE.format(tmp_path / "runs" / name / "model.keras") for name in "ac"]
    assert smoke_notes([str(tmp_path / "runs")]) == expected
    assert smoke_notes([str(tmp_path / "runs" / "b"), str(tmp_path / "runs" / "c")]) == [
        expected[1]
    ]
    smoke = describe_model(str(tmp_path / "runs" / "a" / "model.keras"))
    assert (smoke["smoke_test"], smoke["note"]) == (True, SMOKE_TEST_NOTE)
    real = describe_model(str(tmp_path / "runs" / "b"))
    assert real["smoke_test"] is False and "note" not in real


def test_export_says_so_and_its_sidecar_carries_the_mark(tmp_path):
    run_dir = tmp_path / "smoke-run"
    run_dir.mkdir()
    marks = {"smoke_test": True, "note": SMOKE_TEST_NOTE}
    save_model_atomically(build_transform_net("tiny"), str(run_dir / "model.keras"), marks)
    result = run_in_process(
        "export.py", run_dir, "--format", "tflite", "--output", tmp_path / "out",
        "--verify-size", 32,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert NOTE.format(run_dir / "model.keras") in [
        line.removeprefix("note: ") for line in result.stderr.splitlines()
    ]
    sidecar = json.loads((tmp_path / "out" / "model.tflite.json").read_text())
    assert (sidecar["smoke_test"], sidecar["note"]) == (True, SMOKE_TEST_NOTE)


def test_serving_a_built_site_notes_its_smoke_tests_models(tmp_path):
    """A site's manifest entries carry their models' marks (describe_model's fields), so
    ``kstyle serve SITE`` says which of its models are smoke tests'."""
    from kstyle.export.web import MANIFEST, SITE_FORMAT, site_smoke_notes

    smoke, plain, site = tmp_path / "smoke.keras", tmp_path / "plain.keras", tmp_path / "site"
    save_model_atomically(build_transform_net("tiny"), str(smoke), {"smoke_test": True})
    save_model_atomically(build_transform_net("tiny"), str(plain), {"smoke_test": False})
    entries = [
        {**describe_model(str(path)), "file": f"models/{path.stem}.onnx"} for path in (smoke, plain)
    ]
    site.mkdir()
    (site / MANIFEST).write_text(json.dumps({"kstyle_site": SITE_FORMAT, "models": entries}))
    assert site_smoke_notes(str(site)) == [NOTE.format(f"models/smoke.onnx in {site}")]
