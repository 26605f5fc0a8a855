"""Colour preservation, strength, tiling, video and the decompression-bomb guard."""

import os

import numpy as np
import pytest
from conftest import random_image
from PIL import Image
from test_cli import assert_one_line_error, run

from kstyle import memory, tiling
from kstyle.demo import structured_image
from kstyle.errors import KstyleError
from kstyle.images import load_image, psnr, seam_metric
from kstyle.inference import rgb_to_ycbcr, stylize_array, ycbcr_to_rgb
from kstyle.stylize_files import stylize
from kstyle.transform_net import load_transform_net


@pytest.fixture(scope="module")
def model(saved_model_path):
    return load_transform_net(saved_model_path)


def test_ycbcr_round_trip_matches_pillow():
    rgb = random_image(16, 16, seed=1)
    ours = rgb_to_ycbcr(rgb)
    pillow = np.asarray(Image.fromarray(rgb).convert("YCbCr"), np.float64)
    assert np.abs(ours - pillow).max() <= 1.0
    np.testing.assert_allclose(ycbcr_to_rgb(ours), rgb, atol=1e-6)


def test_preserve_color_keeps_chroma_and_takes_stylized_luminance(model):
    content = structured_image(64, 64, seed=2)
    stylized = stylize_array(model, content)
    kept = stylize_array(model, content, preserve_colors=True)
    content_ycc, kept_ycc, styled_ycc = map(rgb_to_ycbcr, (content, kept, stylized))
    assert np.abs(kept_ycc[..., 1:] - content_ycc[..., 1:]).max() <= 1.0  # Cb, Cr within 1
    assert np.abs(kept_ycc[..., 0] - content_ycc[..., 0]).mean() > 5.0  # luminance changed
    # ... to the stylized luminance wherever that colour fits in the RGB cube
    # (elsewhere the luminance is clamped, so the colour ends on a face of the RGB cube)
    close = np.abs(kept_ycc[..., 0] - styled_ycc[..., 0]) <= 1.0
    on_face = (kept <= 1).any(axis=-1) | (kept >= 254).any(axis=-1)
    assert close.mean() > 0.5 and (close | on_face).all()
    assert np.abs(stylized.astype(int) - kept).max() > 10  # not just the stylized output


def test_strength_blends_and_zero_returns_the_input(model):
    content = structured_image(40, 52, seed=3)
    np.testing.assert_array_equal(stylize_array(model, content, strength=0.0), content)
    full = stylize_array(model, content).astype(np.float64)
    half = stylize_array(model, content, strength=0.5).astype(np.float64)
    assert np.abs(half - (full + content) / 2).max() <= 1.0
    assert np.abs(half - content).mean() > 5.0
    np.testing.assert_array_equal(stylize_array(model, content, strength=1.0), full)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(KstyleError, match="--strength"):
            stylize_array(model, content, strength=bad)


def test_tiled_matches_untiled_without_seams(model):
    image = structured_image(256, 256, seed=4)
    untiled = stylize_array(model, image, tile=0)
    tiled = stylize_array(model, image, tile=64)
    assert psnr(untiled, tiled) >= 35.0
    border, inside = seam_metric(tiled, 64)
    assert border <= 1.1 * inside, (border, inside)
    # without shared statistics every tile is normalised alone and the seams show
    naive = np.zeros_like(image)
    for top in range(0, 256, 64):
        for left in range(0, 256, 64):
            naive[top : top + 64, left : left + 64] = stylize_array(
                model, image[top : top + 64, left : left + 64]
            )
    assert psnr(untiled, naive) < psnr(untiled, tiled) - 10


def test_tiled_statistics_are_exact_when_the_statistics_pass_does_not_fit(model, tmp_path):
    image = structured_image(256, 192, seed=6)
    untiled = stylize_array(model, image, tile=0)
    # a statistics budget of 4096 px: a downscaled statistics pass would drift well below 35 dB
    tiler = tiling.TiledStylizer(model, 64, stats_pixels=4096, directory=str(tmp_path))
    exact = stylize_array(model, image, tiler=tiler)
    assert psnr(untiled, exact) >= 35.0
    assert os.listdir(tmp_path) == []  # the activations on disk are cleaned up
    tiler = tiling.TiledStylizer(model, 64, stats_pixels=4096, exact_statistics=False)
    assert psnr(untiled, stylize_array(model, image, tiler=tiler)) < psnr(untiled, exact) - 10


def test_auto_tiling_follows_the_memory_budget(model, monkeypatch):
    assert memory.parse_memory("4GB") == 4 * 2**30
    assert memory.parse_memory("512MB") == 512 * 2**20
    with pytest.raises(KstyleError, match="memory size"):
        memory.parse_memory("lots")
    image = structured_image(128, 96, seed=5)
    calls = []
    original = tiling.TiledStylizer.__call__
    monkeypatch.setattr(
        tiling.TiledStylizer, "__call__", lambda self, *a, **k: calls.append(self.tile) or
        original(self, *a, **k)
    )  # fmt: skip
    budget = memory.forward_bytes(64, 64)  # too little for 128 x 96: tiles of 64 px
    monkeypatch.setattr(tiling, "auto_tile_size", lambda memory, margin=48: 64)
    out = stylize_array(model, image, max_memory=budget)
    assert calls == [64] and out.shape == image.shape
    stylize_array(model, image, max_memory="64GB")
    assert calls == [64]  # fits: no tiling


def test_video_round_trip_keeps_frames_size_and_fps(model, tmp_path):
    import imageio.v2 as imageio

    source = str(tmp_path / "clip.mp4")
    with imageio.get_writer(source, fps=10, macro_block_size=1, ffmpeg_log_level="error") as w:
        for index in range(10):
            w.append_data(random_image(48, 64, seed=index))
    target = str(tmp_path / "out" / "styled.mp4")
    written, failed = stylize(model, source, target, strength=0.8, preserve_colors=True)
    assert written == [target] and failed == []
    reader = imageio.get_reader(target)
    assert reader.get_meta_data()["fps"] == pytest.approx(10.0)
    frames = [np.asarray(frame) for frame in reader]
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    # and the frames really are stylized, not copied
    assert np.abs(frames[0].astype(int) - random_image(48, 64, seed=0)).mean() > 5


def test_video_keeps_audio(model, tmp_path):
    import subprocess

    import imageio_ffmpeg

    from kstyle.video import has_audio

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    source = str(tmp_path / "with_audio.mp4")
    subprocess.run(
        [ffmpeg, "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-c:a", "aac", "-shortest", source],
        check=True,
    )  # fmt: skip
    assert has_audio(source)
    target = str(tmp_path / "styled.mp4")
    stylize(model, source, target, max_size=32)
    assert has_audio(target)
    import imageio.v2 as imageio

    assert imageio.get_reader(target).get_meta_data()["size"] == (32, 24)


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
        run("stylize.py", "--model", saved_model_path, source, "--output", tmp_path / "o.png",
            "--max-pixels", 100),
        "--max-pixels", "4,096 pixels",
    )  # fmt: skip
    assert not (tmp_path / "o.png").exists(), line
    result = run(
        "stylize.py", "--model", saved_model_path, source, "--output", tmp_path / "o.png",
        "--max-pixels", 0, "--preserve-color", "--strength", 0.5, "--tile", 32,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "o.png").size == (64, 64)
    assert_one_line_error(
        run("stylize.py", "--model", saved_model_path, source, "--output", tmp_path / "p.png",
            "--strength", 2),
        "--strength",
    )  # fmt: skip
