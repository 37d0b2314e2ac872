"""A stage's peak memory: the kernel's high-water mark, reset at the stage's start (Linux)."""

import sys

import pytest

from selfalign.process import peak_memory_mib, reset_peak_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def test_the_peak_follows_an_allocation_and_a_reset_forgets_it():
    reset_peak_memory()
    before = peak_memory_mib()
    block = b"\x01" * (300 * 2**20)  # every page written (a calloc of fresh pages would not touch them)
    del block
    after = peak_memory_mib()
    assert after - before > 250
    reset_peak_memory()
    assert peak_memory_mib() < after - 250
