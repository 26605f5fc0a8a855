import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_image
from PIL import Image

from kstyle.image_headers import UNKNOWN, declared_size, within_pixel_limit

FORMATS = {
    "jpeg": ("JPEG", {}),
    "png": ("PNG", {}),
    "gif": ("GIF", {}),
    "bmp": ("BMP", {}),
    "webp-lossy": ("WEBP", {"lossless": False}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "webp-extended": ("WEBP", {"lossless": False, "exif": b"Exif\0\0kstyle"}),
}


def encoded(kind, height=23, width=37):
    """A ``kind`` (a key of FORMATS) file of a height x width picture, as bytes."""
    fmt, options = FORMATS[kind]
    buffer = io.BytesIO()
    Image.fromarray(random_image(height, width, seed=4)).save(buffer, fmt, **options)
    return buffer.getvalue()


def size_in_graph(data):
    """``declared_size`` as a tf.data pipeline runs it: traced in a graph."""
    dataset = tf.data.Dataset.from_tensors(tf.constant(data)).map(declared_size)
    return tuple(int(v) for v in next(iter(dataset)))


@pytest.mark.parametrize("kind", FORMATS)
def test_the_declared_size_is_the_real_size(kind):
    data = encoded(kind)
    if kind.startswith("webp"):
        chunk = {"lossy": b"VP8 ", "lossless": b"VP8L", "extended": b"VP8X"}[kind[5:]]
        assert data[12:16] == chunk  # the chunk this case is about
    assert tuple(int(v) for v in declared_size(tf.constant(data))) == (23, 37)
    assert size_in_graph(data) == (23, 37)
    assert tuple(tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2]) == (
        23,
        37,
    )  # what TF decodes
    other = encoded(kind, height=61, width=19)
    assert size_in_graph(other) == (61, 19)


def test_a_top_down_bmp_declares_its_absolute_height():
    data = bytearray(encoded("bmp"))
    data[22:26] = struct.pack("<i", -23)  # rows stored top-down
    assert size_in_graph(bytes(data)) == (23, 37)
    assert tuple(
        tf.io.decode_image(bytes(data), channels=3, expand_animations=False).shape[:2]
    ) == (23, 37)


def test_huge_declared_sizes_are_read_without_decoding():
    png = bytearray(encoded("png"))
    png[16:24] = struct.pack(">II", 20000, 30000)  # width, height
    assert size_in_graph(bytes(png)) == (30000, 20000)
    gif = bytearray(encoded("gif"))
    gif[6:10] = struct.pack("<HH", 65535, 40000)
    assert size_in_graph(bytes(gif)) == (40000, 65535)
    bmp = bytearray(encoded("bmp"))
    bmp[18:26] = struct.pack("<ii", 100000, -70000)
    assert size_in_graph(bytes(bmp)) == (70000, 100000)
    vp8x = bytearray(encoded("webp-extended"))
    vp8x[24:30] = (2**24 - 1).to_bytes(3, "little") + (12345 - 1).to_bytes(3, "little")
    assert size_in_graph(bytes(vp8x)) == (12345, 2**24)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"junk",
        b"not an image at all, but long enough for every header",
        b"GIF89a\x05",  # cut inside the logical screen
        encoded("png")[:20],  # cut inside the IHDR
        b"RIFF\0\0\0\0WEBPVP8 " + bytes(20),  # a VP8 chunk without its start code
    ],
)
def test_unknown_or_short_bytes_declare_no_size(data):
    assert size_in_graph(data) == (UNKNOWN, UNKNOWN)
    assert not bool(within_pixel_limit(tf.constant(data), 10**9))


def test_the_pixel_limit_is_inclusive_and_zero_turns_it_off():
    data = tf.constant(encoded("png"))  # 23 x 37 = 851 pixels
    assert bool(within_pixel_limit(data, 851)) and not bool(within_pixel_limit(data, 850))
    assert bool(within_pixel_limit(tf.constant(b"junk"), 0))
    assert bool(within_pixel_limit(tf.constant(b"junk"), None))


def test_an_unreadable_jpeg_header_is_an_error():
    with pytest.raises(tf.errors.InvalidArgumentError):
        declared_size(tf.constant(b"\xff\xd8\xff" + np.zeros(40, np.uint8).tobytes()))
