"""Every local file the READMEs link or show (pictures included) exists in the repository."""
from __future__ import annotations

import re

import pytest

from tests._paths import REPO

DOCS = ["README.md", "bench/README.md", "models/README.md", "docs/API.md"]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](target) and ![alt](target)


@pytest.mark.parametrize("doc", DOCS)
def test_local_links_exist(doc):
    path = REPO / doc
    targets = [t for t in LINK.findall(path.read_text()) if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"


def test_the_readme_pictures_are_checked():
    assert "docs/exposure.jpg" in LINK.findall((REPO / "README.md").read_text())
