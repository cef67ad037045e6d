"""`python -m cugd_core ...` (also under `torchrun ... -m cugd_core train`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
