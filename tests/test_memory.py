"""The memory budget: reading sizes, and what fits in them."""

import pytest

from kstyle import memory
from kstyle.errors import KstyleError


def test_sizes_are_read_in_binary_units():
    assert memory.parse_memory("4GB") == 4 * 2**30
    assert memory.parse_memory("512MB") == 512 * 2**20
    assert memory.parse_memory("1.5g") == 3 * 2**29
    assert memory.parse_memory(" 2 KiB ") == 2048
    assert memory.parse_memory(1000000) == 1000000
    for bad in ("lots", "-1GB", "0", "4 GB extra"):
        with pytest.raises(KstyleError, match="memory size"):
            memory.parse_memory(bad)


def test_one_resolver_for_auto_none_and_sizes():
    assert memory.resolve_max_memory("auto") == 5 * 2**29  # 2.5 GiB
    assert memory.resolve_max_memory(" AUTO ") == 5 * 2**29
    assert memory.resolve_max_memory(None) is None
    assert memory.resolve_max_memory("1GB") == 2**30
    assert memory.resolve_max_memory(12345) == 12345


def test_what_fits():
    base, per_pixel = 700 * 2**20, 700
    assert memory.forward_bytes(100, 200, batch=3) == base + per_pixel * 3 * 100 * 200
    budget = base + per_pixel * 512 * 512
    assert memory.pixels_within(budget) == 512 * 512
    assert memory.pixels_within(None) >= 2**60
    assert memory.pixels_within(1) == 4096  # never below a 64 x 64 tile
    assert not memory.needs_tiling(512, 512, budget)
    assert memory.needs_tiling(512, 513, budget)
    assert not memory.needs_tiling(10**5, 10**5, None)
    assert memory.batch_within(256, 256, None) == 8
    assert memory.batch_within(512, 512, budget) == 1
    assert memory.batch_within(256, 256, budget) == 4  # 4 x 256² = 512²
