"""The size an encoded image's header declares, read in TensorFlow ops (no decoding).

A tf.data pipeline checks it against a pixel limit before it decodes a file, so that a small
file declaring a huge picture (a decompression bomb) is never expanded in memory. The formats
are those ``tf.io.decode_image`` reads, recognized by their magic bytes as the decoder does:
JPEG, PNG, GIF, BMP and WebP (lossy, lossless and extended).
"""

import numpy as np
import tensorflow as tf

HEADER_BYTES = 32  # every size below lies in the first 30 bytes (JPEG aside)
UNKNOWN = -1  # the declared size of bytes that are no known format, or too short


def _field(start, length, big_endian=False, divide=1, modulo=2**32, add=0, signed=False):
    """An unsigned integer in the header: ``(bytes[start:start+length] // divide) % modulo +
    add``, made absolute if ``signed`` (two's complement, 32 bits)."""
    return start, length, big_endian, divide, modulo, add, signed


# (magic bytes by offset, shortest valid length, height field, width field), after the
# specifications of each format; WebP by its first chunk
_FORMATS = (
    ({0: b"\x89PNG\r\n\x1a\n"}, 24, _field(20, 4, True), _field(16, 4, True)),  # IHDR
    ({0: b"GIF87a"}, 10, _field(8, 2), _field(6, 2)),  # logical screen
    ({0: b"GIF89a"}, 10, _field(8, 2), _field(6, 2)),
    ({0: b"BM"}, 26, _field(22, 4, signed=True), _field(18, 4, signed=True)),  # negative: top-down
    (  # VP8: a frame tag, the start code 9d 01 2a, then 14-bit width and height
        {0: b"RIFF", 8: b"WEBPVP8 ", 23: b"\x9d\x01\x2a"},
        30,
        _field(28, 2, modulo=2**14),
        _field(26, 2, modulo=2**14),
    ),
    (  # VP8L: the signature 2f, then width - 1 and height - 1 in 14 bits each
        {0: b"RIFF", 8: b"WEBPVP8L", 20: b"\x2f"},
        25,
        _field(21, 4, divide=2**14, modulo=2**14, add=1),
        _field(21, 4, modulo=2**14, add=1),
    ),
    (  # VP8X: 4 bytes of flags, then the canvas's width - 1 and height - 1 in 24 bits each
        {0: b"RIFF", 8: b"WEBPVP8X"},
        30,
        _field(27, 3, add=1),
        _field(24, 3, add=1),
    ),
)


def _tables():
    """The constants that read every format's magic and fields in a few vector ops."""
    count = len(_FORMATS)
    expected = np.zeros((count, HEADER_BYTES), np.int64)
    compared = np.zeros((count, HEADER_BYTES), bool)
    weights = np.zeros((2 * count, HEADER_BYTES), np.int64)
    divide, modulo, add, signed = (np.zeros(2 * count, np.int64) for _ in range(4))
    signed = signed.astype(bool)
    for row, (magic, _, *fields) in enumerate(_FORMATS):
        for offset, text in magic.items():
            expected[row, offset : offset + len(text)] = list(text)
            compared[row, offset : offset + len(text)] = True
        for column, (start, length, big, div, mod, plus, sign) in enumerate(fields):
            places = range(length - 1, -1, -1) if big else range(length)
            weights[2 * row + column, start : start + length] = [256**p for p in places]
            divide[2 * row + column], modulo[2 * row + column] = div, mod
            add[2 * row + column], signed[2 * row + column] = plus, sign
    lengths = np.array([format_[1] for format_ in _FORMATS], np.int64)
    return expected, compared, lengths, weights, divide, modulo, add, signed


_TABLES = _tables()


def _non_jpeg_size(encoded):
    """(height, width) of a header of any format but JPEG; UNKNOWN when none matches."""
    expected, compared, lengths, weights, divide, modulo, add, signed = _TABLES
    start = tf.strings.substr(encoded, 0, HEADER_BYTES)  # (a copy of the header alone)
    padded = tf.strings.substr(tf.strings.join([start, b"\0" * HEADER_BYTES]), 0, HEADER_BYTES)
    header = tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)
    long_enough = tf.cast(tf.strings.length(encoded), tf.int64) >= lengths
    matches = tf.reduce_all(tf.equal(header, expected) | ~compared, axis=1) & long_enough
    values = tf.reduce_sum(weights * header, axis=1) // divide % modulo
    values = tf.where(signed & (values >= 2**31), 2**32 - values, values) + add
    found = tf.reshape(values, (-1, 2))[tf.argmax(tf.cast(matches, tf.int32))]
    found = tf.where(tf.reduce_any(matches), found, tf.constant(UNKNOWN, tf.int64))
    return found[0], found[1]


def declared_size(encoded):
    """The (height, width) that an encoded image's header declares, without decoding it.

    Args:
        encoded: a scalar string tensor, the bytes of a JPEG, PNG, GIF, BMP or WebP file.

    Returns:
        Two int64 scalars in pixels: a GIF's logical screen, a BMP's absolute height (it is
        negative for top-down rows), a WebP's canvas; ``(UNKNOWN, UNKNOWN)`` for bytes that
        are none of these formats or are shorter than their header.

    Raises:
        tf.errors.InvalidArgumentError: a JPEG whose header cannot be read (when run).
    """

    def jpeg_size():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)
        return shape[0], shape[1]

    is_jpeg = tf.strings.substr(encoded, 0, 3) == b"\xff\xd8\xff"  # (shorter: the bytes there)
    return tf.cond(is_jpeg, jpeg_size, lambda: _non_jpeg_size(encoded))


def within_pixel_limit(encoded, max_pixels):
    """A bool scalar: ``encoded`` declares a known size of at most ``max_pixels`` pixels
    (``max_pixels`` 0 or None: any size, without reading the header)."""
    if not max_pixels:
        return tf.constant(True)
    height, width = declared_size(encoded)
    return (height >= 0) & (width >= 0) & (height * width <= int(max_pixels))
