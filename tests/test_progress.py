"""The progress bar that video and tiled stylizing draw."""

import io

from kstyle.progress import ProgressBar


def test_bar_counts_items_and_ends_its_line():
    stream = io.StringIO()
    bar = ProgressBar(total=4, stream=stream, label="tiles")
    bar.update(1)
    bar.update(3)
    bar.close()
    lines = stream.getvalue().split("\r")
    assert lines[1].startswith("tiles 1/4 [======") and "tiles/s" in lines[1]
    assert lines[2].startswith("tiles 4/4 [" + "=" * 24 + "]")
    assert stream.getvalue().endswith("\n") and bar.done == 4 and bar.rate > 0


def test_bar_without_a_total():
    stream = io.StringIO()
    ProgressBar(stream=stream).update(7)
    assert stream.getvalue().startswith("\rframes 7 ") and "ETA" not in stream.getvalue()
