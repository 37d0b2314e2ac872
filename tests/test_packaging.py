"""The hand-written package list in pyproject.toml covers every package, and a wheel carries prompts/."""

import subprocess
import sys
import zipfile
from pathlib import Path

from selfalign.config import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "selfalign").rglob("__init__.py")}
    assert found | {"selfalign._prompts"} == listed


def test_wheel_carries_the_prompt_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("selfalign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("seed_tasks.jsonl", "heldout.jsonl", "self_instruct.txt", "urial.txt"):
        assert f"selfalign/_prompts/{name}" in names
