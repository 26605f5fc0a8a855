"""Listing images, and atomic, durable writes that never leave half a file."""

import json
import os

import pytest

from kstyle.errors import KstyleError
from kstyle.files import (
    atomic_directory,
    atomic_output,
    list_image_files,
    remove_leftovers,
    write_json_atomically,
)


def test_list_image_files_is_recursive_sorted_and_cut_by_fraction(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.webp", "sub/deeper/d.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in list_image_files(str(tmp_path))]
    assert found == ["a.png", "b.JPG", "sub/c.webp", "sub/deeper/d.gif"]
    assert len(list_image_files(str(tmp_path), fraction=0.5)) == 2
    with pytest.raises(KstyleError, match="keeps none"):
        list_image_files(str(tmp_path), fraction=0.1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KstyleError, match="no images in"):
        list_image_files(str(tmp_path / "empty"))
    with pytest.raises(KstyleError, match="folder not found"):
        list_image_files(str(tmp_path / "missing"))


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_output(str(target)) as temporary:
        assert temporary.endswith(".txt") and os.path.dirname(temporary) == str(tmp_path)
        with open(temporary, "w") as file:
            file.write("new")
        assert target.read_text() == "old"  # not yet
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as temporary:
            with open(temporary, "w") as file:
                file.write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]  # no temporary file left


def test_temporary_names_stay_short_for_long_targets(tmp_path):
    name = "x" * 250 + ".png"  # 254 bytes: a longer temporary name would not fit in 255
    with atomic_output(str(tmp_path / name)) as temporary:
        assert len(os.path.basename(temporary)) <= 40
        open(temporary, "wb").close()
    assert os.listdir(tmp_path) == [name]


def test_atomic_directory_swaps_whole_folders(tmp_path):
    target = tmp_path / "saved"
    target.mkdir()
    (target / "old.pb").write_text("old")
    with atomic_directory(str(target)) as temporary:
        with open(os.path.join(temporary, "new.pb"), "w") as file:
            file.write("new")
    assert os.listdir(target) == ["new.pb"]
    with pytest.raises(ValueError):
        with atomic_directory(str(target)) as temporary:
            raise ValueError
    assert os.listdir(target) == ["new.pb"] and sorted(os.listdir(tmp_path)) == ["saved"]


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "config.json"
    write_json_atomically({"b": 1, "a": [1, 2]}, str(path))
    assert path.read_text().startswith('{\n  "a"')
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    write_json_atomically({"b": 1, "a": 2}, str(path), sort_keys=False)
    assert path.read_text().startswith('{\n  "b"')


def test_outputs_get_the_usual_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        with atomic_output(str(tmp_path / "new.txt")) as temporary:
            open(temporary, "w").close()
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        (tmp_path / "shared.txt").write_text("old")
        (tmp_path / "shared.txt").chmod(0o664)
        with atomic_output(str(tmp_path / "shared.txt")) as temporary:
            open(temporary, "w").close()
        assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o664  # the replaced file's
        with atomic_directory(str(tmp_path / "saved")) as temporary:
            open(os.path.join(temporary, "x"), "w").close()
        assert (tmp_path / "saved").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old_umask)


def test_a_file_never_replaces_a_folder_and_leftovers_are_removed(tmp_path):
    (tmp_path / "out.png").mkdir()
    (tmp_path / "out.png" / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError):
        with atomic_output(str(tmp_path / "out.png")) as temporary:
            open(temporary, "w").close()
    assert (tmp_path / "out.png" / "keep.txt").read_text() == "mine"
    (tmp_path / ".kstyle-abc.tmp.keras").write_bytes(b"half a model")
    (tmp_path / ".kstyle-def.tmp").mkdir()
    (tmp_path / ".hidden-but-yours").write_text("x")
    assert remove_leftovers(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-but-yours", "out.png"]
