"""`python -m cugd_core ...` (also under `torchrun ... -m cugd_core train`)."""
import os
import sys
import threading

from .commands import main


def _exit(code: int) -> None:
    """Exit with `code`. If folder-pipeline workers are still inside a torch call (after Ctrl-C, SAM
    cannot be stopped mid-image), end the process at once: letting the interpreter finalise under a
    running native thread ends in `terminate called without an active exception` (SIGABRT, 134).
    Every output is already complete (atomic writes) and the summary printed; only stdio is flushed."""
    pipeline = sys.modules.get("cugd_core.pipeline")  # not imported: no workers
    if pipeline and any(t.is_alive() and t.name.startswith(pipeline.THREAD_PREFIX) for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    _exit(main())
