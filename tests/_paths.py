"""Where the tests find the project's shared, read-only material (golden fixtures, photos)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CUGD_SHARED", REPO.parent / "shared")).resolve()
GOLDEN = SHARED / "golden"
PHOTOS = SHARED / "data" / "photos" / "bsds500"
