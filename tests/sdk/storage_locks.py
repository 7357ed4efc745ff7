"""Lock and lose a real ``EncryptedFileStorage``, as a phone's locked or lost store would.

Locking is real, not a stand-in: the file is moved aside and a directory takes its path, so
every read and write of the real backend fails with a real ``OSError``
(``IsADirectoryError``, for root too), which it reports as ``StorageUnavailable``.
Unlocking puts the file back untouched. A "backup restored onto a new phone" is the same
file opened under another key: the backend reports ``StorageLost``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileStoreLock", "restore_backup"]


@dataclass
class FileStoreLock:
    """Make the token file at ``path`` unreadable and unwritable, and back again."""

    path: Path

    @property
    def _aside(self) -> Path:
        return self.path.with_name(self.path.name + ".locked-aside")

    @property
    def locked(self) -> bool:
        return self.path.is_dir()

    def lock(self) -> None:
        if self.path.exists():
            self.path.rename(self._aside)
        self.path.mkdir()

    def unlock(self) -> None:
        shutil.rmtree(self.path)
        if self._aside.exists():
            self._aside.rename(self.path)


def restore_backup(path: Path, onto: Path) -> Path:
    """Copy the token file at ``path`` to ``onto``, as a backup restored on a new phone."""
    shutil.copyfile(path, onto)
    return onto
