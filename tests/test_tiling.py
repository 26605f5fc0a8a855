"""Tiled stylization: shared exact statistics, no seams, bounded memory."""

import os

import numpy as np

from kstyle import tiling
from kstyle.demo import structured_image
from kstyle.images import psnr, seam_metric
from kstyle.inference import stylize_array


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
