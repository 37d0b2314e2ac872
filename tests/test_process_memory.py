"""A stage's peak memory: the kernel's high-water mark, reset at the stage's start (Linux)."""

import os
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


# Blocks of 2 MiB after a 30 MiB block was freed: by default glibc has raised its mmap threshold past
# them, so they come from the heap and stay resident after they are freed (the last one, kept, pins the
# heap's top). With hand_back_large_blocks they are mapped and go back to the OS at once.
FRAGMENT = """
import sys
from selfalign.process import hand_back_large_blocks

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))

if sys.argv[1] == "fixed":
    hand_back_large_blocks()
big = b"\\x01" * (30 * 2**20)
del big
blocks = [b"\\x01" * (2 * 2**20) for _ in range(101)]
held = rss()
keep = blocks[-1]
del blocks
print(held - rss())
"""


@pytest.mark.parametrize("mode", ["default", "fixed"])
def test_large_freed_blocks_go_back_to_the_os_only_with_the_fixed_threshold(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, check=True,
                         env=env).stdout
    released = float(out)
    if mode == "fixed":
        assert released > 150  # of the 200 MiB freed
    else:
        assert released < 50  # glibc's default keeps them: what fragmented the sampler's heap
