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


def test_the_readme_is_short_and_every_link_in_the_docs_stays_in_the_repo():
    """A newcomer reads the README in five minutes; everything else is in docs/, and no link leads outside
    the repository (a design file beside it, an issue tracker) or to a file that is not there."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = root / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 150
    pages = [readme, *sorted((root / "docs").glob("*.md")), root / "prompts" / "README.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if re.match(r"[a-z]+:", path) or not path:
                broken.append(f"{page.name}: {target} (not a file in the repo)")
            elif not (page.parent / path).resolve().is_relative_to(root) or not (page.parent / path).exists():
                broken.append(f"{page.name}: {target}")
        text = page.read_text(encoding="utf-8")
        if "../shared" in text or re.search(r"\bissue \d+\b", text):
            broken.append(f"{page.name}: points outside the repo")
    assert broken == []
