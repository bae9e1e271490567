"""Atomic file writes: results are never seen half-written (temp file, fsync, rename)."""

import json
import os
import tempfile


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Writes `text` to `path` so that readers see the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        # mkstemp creates 0600; give results the permissions an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path):
    """Reads a JSON-lines file into a list of dicts (missing file: empty list)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def atomic_append_jsonl(path, record, keep=None):
    """Appends one JSON record; the whole file is rewritten atomically.

    Args:
      keep: if given, only the first `keep` existing records are kept before appending (so a resumed
        run that replays an epoch never writes that epoch twice).
    """
    records = read_jsonl(path)
    if keep is not None:
        records = records[:keep]
    records.append(record)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
