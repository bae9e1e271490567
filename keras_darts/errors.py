"""User-facing errors and the entry-point wrapper: one clear line on stderr, never a traceback.

Imports nothing heavy, so `bin/` scripts can use it before TensorFlow is loaded.
"""

import importlib
import os
import sys


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a directory).

    The message is printed as a single line by `run_main`; it must name the flag or file and say
    what is wrong.
    """


class DivergenceError(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def _fail(message, code=2):
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(code)


def run_main(main, argv):
    """Runs an absl `main`, turning `UserError` into one line on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume", 130)


def parse_flags(argv):
    """absl flags parser that reports a bad flag in one line (absl prints usage text as well)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(e)


def run(main):
    """`app.run` for keras-darts binaries: one-line errors for bad flags and `UserError`s."""
    from absl import app, logging

    logging.set_verbosity(logging.WARNING)  # TF's INFO lines (saver, signatures) are noise here
    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)


def quiet_import(module):
    """Imports `module` with fd 2 muted.

    It pulls in TensorFlow, whose C++ runtime logs CUDA probing straight to fd 2 at import whatever
    TF_CPP_MIN_LOG_LEVEL says; muting it keeps errors to the one promised line.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        return importlib.import_module(module)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
