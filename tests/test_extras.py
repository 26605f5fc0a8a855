"""A feature whose extra is missing is a one-line error naming the pip command."""

import os

import pytest
from conftest import assert_one_line_error, run

from kstyle.errors import KstyleError
from kstyle.extras import require


def test_require_returns_the_module_or_names_the_extra():
    assert require("json", "video").dumps([1]) == "[1]"
    with pytest.raises(
        KstyleError, match=r'needs \'no_such_module_x\'.*pip install "kstyle\[video\]"'
    ):
        require("no_such_module_x", "video")
    with pytest.raises(ValueError):
        require("json", "no-such-extra")


def hide(tmp_path, *modules):
    """A PYTHONPATH entry under which importing ``modules`` fails as if not installed."""
    folder = tmp_path / "hidden"
    for module in modules:
        package = folder / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n"
        )
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize(
    "fmt, hidden",
    [("tflite", "ai_edge_litert"), ("onnx", "tf2onnx"), ("onnx", "onnxruntime")],
)
def test_export_without_its_extra(tmp_path, saved_model_path, fmt, hidden):
    output = tmp_path / "export"
    result = run(
        "export.py", saved_model_path, "--format", fmt, "--output", output,
        env=hide(tmp_path, hidden),
    )  # fmt: skip
    assert_one_line_error(result, f"'{hidden}'", 'pip install "kstyle[export]"')
    assert not output.exists() or not any(output.iterdir())


def test_video_without_its_extra(tmp_path, saved_model_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the missing extra is reported first")
    result = run(
        "stylize.py", video, "--model", saved_model_path, "--output", tmp_path / "out.mp4",
        env=hide(tmp_path, "imageio", "imageio_ffmpeg"),
    )  # fmt: skip
    assert_one_line_error(result, 'pip install "kstyle[video]"')
    assert not (tmp_path / "out.mp4").exists()
