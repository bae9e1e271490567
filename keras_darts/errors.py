"""User-facing errors: one clear line, no traceback, non-zero exit."""

import sys


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a directory).

    The message is printed as a single line by `run_main`; it must name the flag or file and say
    what is wrong.
    """


class DivergenceError(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def run_main(main, argv):
    """Runs an absl `main`, turning `UserError` into one line on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        message = " ".join(str(e).split("\n"))
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130)
