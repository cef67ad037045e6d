"""Exit codes and user-facing errors of every command (one handler: `commands.main`)."""
from __future__ import annotations

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every input enhanced (or already done)
  {EXIT_ALL_FAILED}    no input could be enhanced (each failure is listed)
  {EXIT_USAGE}    usage or setup error (bad option or value, missing model or input, output folder not
       writable or overlapping the inputs, too few steps for the model): nothing was done
  {EXIT_SOME_FAILED}    some inputs failed (listed), the others were written
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): finished outputs are kept; run again to resume"""

# what a user can act on from the message alone: printed as one line, without the exception's type
KNOWN_ERRORS = (ValueError, OSError, ImportError, MemoryError)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def exit_code(done: int, skipped: int, failed: int) -> int:
    """`EXIT_CODES` of a finished run from its counts: 0 all done (or already done), 1 nothing could
    be done, 3 some failed."""
    if failed:
        return EXIT_SOME_FAILED if done or skipped else EXIT_ALL_FAILED
    return EXIT_OK if done or skipped else EXIT_ALL_FAILED


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def error_line(command: str | None, e: Exception) -> str:
    """`COMMAND: error: message` (with the exception's type and a hint when it is not a known kind)."""
    known = isinstance(e, (CLIError, *KNOWN_ERRORS))
    return (f"{command or 'cugd_core'}: error: {'' if known else type(e).__name__ + ': '}{one_line(e)}"
            + ("" if known else " (set CUGD_DEBUG=1 for the traceback)"))
