"""Private files: directories 0700, files 0600, whatever the umask, even if they existed.

Prompts, answers and codex's own files pass through the cluster directory and the router's
state: other users of a shared cluster must not read them, nor write into an inbox.
"""

import os
import stat

DIR_MODE = 0o700
FILE_MODE = 0o600
# Set by the cluster-side programs at start: what they and codex create is private too.
UMASK = 0o077


def private_dir(path):
    """Create ``path`` (and missing parents) and make it 0700, even if it existed."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path, flags):
    """An ``opener`` for ``open()`` that creates files 0600, whatever the umask."""
    return os.open(path, flags, FILE_MODE)
