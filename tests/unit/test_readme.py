"""The README documents every setting and the two set-up commands that really exist."""

from __future__ import annotations

import os
from pathlib import Path

from plantstream.settings import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table(tmp_path) -> None:
    names = Settings(state_dir=tmp_path).redacted()
    missing = [name for name in names if f"`{name}`" not in README]
    assert not missing, f"add to README's settings table: {missing}"


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    for script in ("scripts/demo", "scripts/test"):
        assert f"{script} " in README
        assert os.access(ROOT / script, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_documents_referenced_by_the_readme_exist() -> None:
    for doc in ("infrastructure", "platform", "hotstore", "streaming", "contract"):
        if f"docs/{doc}.md" in README:
            assert (ROOT / "docs" / f"{doc}.md").exists(), f"docs/{doc}.md is referenced but missing"
