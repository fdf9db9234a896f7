"""A regular install carries every shipped resource (pyproject's data-files list them one by one)."""

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_resource_file_is_installed_with_the_package():
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = {f for files in data_files.values() for f in files}
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resources").rglob("*") if p.is_file()}
    assert shipped == installed, f"add to pyproject.toml: {sorted(shipped - installed)}; remove: {sorted(installed - shipped)}"
    for target, files in data_files.items():
        assert all(target == f"share/lora-studio/{Path(f).parent.as_posix()}" for f in files), target
