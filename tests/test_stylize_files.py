"""Stylizing files and folders, and the stylize command's guards."""

import os

import numpy as np
import pytest
from conftest import assert_one_line_error, random_image, run_in_process
from PIL import Image

from kstyle.errors import KstyleError
from kstyle.images import load_image, side_by_side
from kstyle.stylize_files import stylize


def test_stylize_file_and_side_by_side(model, tmp_path):
    source = str(tmp_path / "in.jpg")
    Image.fromarray(random_image(33, 47, seed=7)).save(source)
    written, failed = stylize(model, source, str(tmp_path / "out.png"))
    assert failed == [] and Image.open(written[0]).size == (47, 33)
    written, _ = stylize(model, source, str(tmp_path / "pair.png"), show_input=True)
    assert Image.open(written[0]).size == (47 * 2 + 8, 33)
    assert side_by_side(np.zeros((3, 2, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)).shape == (
        5,
        14,
        3,
    )


def test_stylize_folder_skips_bad_files_and_writes_the_rest(model, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(random_image(20, 24, seed=8)).save(folder / "a.jpg")
    Image.fromarray(random_image(24, 20, seed=9)).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"")
    written, failed = stylize(model, str(folder), str(tmp_path / "out"))
    assert sorted(os.path.relpath(p, tmp_path / "out") for p in written) == ["a.png", "sub/b.png"]
    assert [os.path.basename(source) for source, _ in failed] == ["broken.jpg"]


def test_stylize_bad_paths(model, tmp_path):
    with pytest.raises(KstyleError, match="input not found"):
        stylize(model, str(tmp_path / "nope.jpg"), str(tmp_path / "o.png"))
    source = str(tmp_path / "in.png")
    Image.fromarray(random_image(8, 8)).save(source)
    with pytest.raises(KstyleError, match="unknown output image type"):
        stylize(model, source, str(tmp_path / "out.xyz"))


def test_bomb_guard_in_library_and_folders(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_image(8, 8, seed=1)).save(folder / "small.png")
    Image.fromarray(random_image(64, 64, seed=2)).save(folder / "big.png")
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(KstyleError, match="--max-pixels"):
        load_image(str(folder / "big.png"), max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == limit_before  # not leaked as a global
    assert load_image(str(folder / "big.png"), max_pixels=0).shape == (64, 64, 3)
    written, failed = stylize(model, str(folder), str(tmp_path / "out"), max_pixels=100)
    assert [os.path.basename(p) for p in written] == ["small.png"]
    assert [os.path.basename(s) for s, _ in failed] == ["big.png"]


def test_cli_bomb_guard_message_and_exit_code(saved_model_path, tmp_path):
    source = tmp_path / "big.png"
    Image.fromarray(random_image(64, 64, seed=3)).save(source)
    line = assert_one_line_error(
        run_in_process("stylize.py", "--model", saved_model_path, source,
                       "--output", tmp_path / "o.png", "--max-pixels", 100),
        "--max-pixels", "4,096 pixels",
    )  # fmt: skip
    assert not (tmp_path / "o.png").exists(), line
    result = run_in_process(
        "stylize.py", "--model", saved_model_path, source, "--output", tmp_path / "o.png",
        "--max-pixels", 0, "--preserve-color", "--strength", 0.5, "--tile", 32,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "o.png").size == (64, 64)
    assert_one_line_error(
        run_in_process("stylize.py", "--model", saved_model_path, source,
                       "--output", tmp_path / "p.png", "--strength", 2),
        "--strength",
    )  # fmt: skip


def test_nothing_the_user_did_not_name_is_overwritten(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_image(16, 20, seed=1)).save(folder / "a.jpg")
    Image.fromarray(random_image(16, 20, seed=2)).save(folder / "a.png")
    Image.fromarray(random_image(16, 20, seed=3)).save(folder / "b.png")
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    written, failed = stylize(model, str(folder), str(tmp_path / "out"))
    names = sorted(os.path.relpath(path, tmp_path / "out") for path in written)
    assert names == ["a.jpg.png", "a.png.png", "b.png"] and failed == []
    # two distinct outputs for the two "a" images, each from its own source
    first, second = (np.asarray(Image.open(tmp_path / "out" / n)) for n in names[:2])
    assert np.abs(first.astype(int) - second).max() > 0
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    for output in (folder, folder / "styled", tmp_path):  # into itself, inside it, around it
        with pytest.raises(KstyleError, match="overlap"):
            stylize(model, str(folder), str(output))
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    with pytest.raises(KstyleError, match="is the input itself"):
        stylize(model, str(folder / "b.png"), str(folder / "b.png"))
    with pytest.raises(KstyleError, match="is the input itself"):
        stylize(model, str(folder / "b.png"), str(folder))  # folder/b.png again
    assert (folder / "b.png").read_bytes() == before["b.png"]
    # an output file named explicitly is replaced
    target = tmp_path / "named.png"
    target.write_bytes(b"old")
    stylize(model, str(folder / "b.png"), str(target))
    assert np.asarray(Image.open(target)).shape == (16, 20, 3)


def test_folder_names_stay_distinct_when_even_the_long_names_collide(tmp_path):
    from kstyle.checks import folder_jobs

    for name in ("a.jpg", "a.png", "a.jpg.png", "B.png", "b.webp"):
        Image.fromarray(random_image(8, 8)).save(tmp_path / name)
    jobs = folder_jobs(str(tmp_path), str(tmp_path.parent / "out"))
    targets = [os.path.basename(target) for _, target in jobs]
    assert len({t.lower() for t in targets}) == 5, targets  # distinct, whatever the case
    assert dict(zip((os.path.basename(s) for s, _ in jobs), targets, strict=True)) == {
        "B.png": "B.png.png",
        "a.jpg": "a.jpg.png",
        "a.jpg.png": "a.jpg_.png",
        "a.png": "a.png.png",
        "b.webp": "b.webp.png",
    }


def test_a_file_stylized_into_its_own_folder_never_replaces_a_neighbour(model, tmp_path):
    Image.fromarray(random_image(16, 16, seed=1)).save(tmp_path / "a.jpg")
    Image.fromarray(random_image(16, 16, seed=2)).save(tmp_path / "a.png")  # an original
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(KstyleError, match="exists beside the input and was not named"):
        stylize(model, str(tmp_path / "a.jpg"), str(tmp_path))
    assert (tmp_path / "a.png").read_bytes() == before
    os.link(tmp_path / "a.png", tmp_path / "hard.png")  # the same file under another name
    with pytest.raises(KstyleError, match="is the input itself"):
        stylize(model, str(tmp_path / "a.png"), str(tmp_path / "hard.png"))
