"""The third-party packages generated code may import, exposed through a folder of links.

Children start without site-packages (`python -S`), so `import selftaught`, `import openai`
or `import llama_cpp` fail inside them; only the allowed distributions (ALLOWED_PACKAGES: numpy)
are reachable, through symbolic links to their installed top-level folders. This keeps
host code out of reach by default; it is not by itself a security boundary.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from selftaught.errors import SandboxError

#: The distributions generated code may import: the paper's tasks and improvers need numpy, nothing else.
ALLOWED_PACKAGES = ("numpy",)


def top_level_entries(distribution_name: str) -> dict[str, Path]:
    """The installed top-level files and folders of a distribution (e.g. numpy and numpy.libs)."""
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise SandboxError(
            f"package {distribution_name!r} is allowed in the sandbox but not installed; "
            f"install it with: pip install {distribution_name}"
        ) from None
    entries: dict[str, Path] = {}
    for file in distribution.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info")) or first in ("..", "__pycache__"):
            continue
        if len(file.parts) == 1 and not first.endswith((".py", ".so", ".pth")):
            continue
        if first.endswith(".pth"):
            continue
        entries[first] = Path(str(distribution.locate_file(first)))
    return entries


class PackageShim:
    """A private folder of links to the allowed packages, created on first use and removed on close."""

    def __init__(self) -> None:
        self._folder: str | None = None

    def paths(self) -> list[str]:
        if self._folder is None:
            folder = tempfile.mkdtemp(prefix="selftaught-packages-")
            os.chmod(folder, 0o755)  # children may run as another user
            for name in ALLOWED_PACKAGES:
                for entry, target in top_level_entries(name).items():
                    link = Path(folder) / entry
                    if not link.exists():
                        link.symlink_to(target)
            self._folder = folder
        return [self._folder]

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
