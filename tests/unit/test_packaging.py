"""The folder -> ``plantstream.*`` mapping in pyproject.toml covers every package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    listed = set(CONFIG["packages"])
    found = set()
    for package, folder in CONFIG["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    missing = found - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_no_folder_shadows_the_standard_library() -> None:
    import sys

    for folder in CONFIG["package-dir"].values():
        assert folder not in sys.stdlib_module_names, folder
