"""README's settings tables and the settings say the same: every variable documented is read, every one read is
documented."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import ENVIRONMENT_FIELDS

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADER = "| variable | default | meaning |"


def documented_variables(markdown: str) -> list[str]:
    """The variables named in the first cell of the settings tables' rows (a row may name several: `A` / `B`)."""
    names: list[str] = []
    in_table = False
    for line in markdown.splitlines():
        if line.strip() == TABLE_HEADER:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            names += re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1])
    return names


def test_the_readme_has_settings_tables_to_check() -> None:
    assert len(documented_variables(README.read_text(encoding="utf-8"))) > 50


def test_every_variable_in_the_readme_is_a_setting() -> None:
    unknown = set(documented_variables(README.read_text(encoding="utf-8"))) - set(ENVIRONMENT_FIELDS)
    assert not unknown, f"documented in README.md but read by no setting: {sorted(unknown)}"


def test_every_setting_is_documented_in_the_readme_once() -> None:
    documented = documented_variables(README.read_text(encoding="utf-8"))
    missing = set(ENVIRONMENT_FIELDS) - set(documented)
    assert not missing, f"settings without a row in README.md's settings tables: {sorted(missing)}"
    repeated = {name for name in documented if documented.count(name) > 1}
    assert not repeated, f"documented twice in README.md: {sorted(repeated)}"


def test_a_row_documents_each_variable_its_first_cell_names_and_nothing_else() -> None:
    row = "| `SESSION_RATE_LIMIT_PER_SECOND` / `SESSION_RATE_LIMIT_BURST` | `30` / `60` | see `REDIS_URL` |"
    markdown = f"text `NOT_A_ROW`\n\n{TABLE_HEADER}\n|---|---|---|\n{row}\n\n| `OTHER_TABLE` |\n"
    assert documented_variables(markdown) == ["SESSION_RATE_LIMIT_PER_SECOND", "SESSION_RATE_LIMIT_BURST"]
