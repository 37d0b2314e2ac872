"""A stage's peak memory: the kernel's high-water mark, reset at the stage's start (Linux)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")

# In a fresh interpreter: inside the full suite the process's earlier tests left a lifetime peak and a
# heap whose state decides whether a new block is counted (seen: the figures did not move in a CI run).
CHECK = """
from selfalign.process import peak_memory_mib, reset_peak_memory
reset_peak_memory()
before = peak_memory_mib()
block = b"\\x01" * (300 * 2**20)  # every page written
del block
after = peak_memory_mib()
reset_peak_memory()
print(before, after, peak_memory_mib())
"""


def test_the_peak_follows_an_allocation_and_a_reset_forgets_it():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    before, after, reset = map(float, out.split())
    assert after - before > 250
    assert reset < after - 250
