"""The documentation stays true: the README is the short front door, and every variable the
configuration page's hand-written table names is one the settings (or the compose file) read.
The full table is generated from Settings when the site is built (`mkdocs build --strict`, in
`make test`)."""

from __future__ import annotations

import re

from data.config.settings import Settings
from tests.helpers.servers import ROOT


def test_the_readme_is_short_and_links_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links to the documentation"
    for link in links:
        assert (ROOT / link).exists(), link


def test_the_configuration_page_names_only_real_settings() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("## Every setting")[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", table))
    known = {name.upper() for name in Settings.model_fields}
    # The compose file's own variables (passwords of its services, the image's build option).
    known |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert named, "the hand-written table names settings"
    assert named - known == set()


def test_every_setting_says_what_it_does() -> None:
    """The configuration page's full table is generated from these descriptions."""
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []
