"""Files written for others to load (adapters, tagging heads) are world-readable, whatever
the writer's umask: a model trained under umask 077 (0600 files, 0700 dirs) must still
load in the service, which runs as another, plain user (the Docker image's `magnet`).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

READABLE_FILE = 0o644  # rw-r--r--
READABLE_DIR = 0o755  # rwxr-xr-x


def make_readable(paths: Iterable[Path]) -> None:
    """chmod each path: directories 0755, files 0644 (links are left alone)."""
    for path in map(Path, paths):
        if not path.is_symlink():
            path.chmod(READABLE_DIR if path.is_dir() else READABLE_FILE)
