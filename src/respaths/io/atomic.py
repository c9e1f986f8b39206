"""Every file respaths writes, written whole or not at all, and one run per output.

  write_bytes(path, data) / write_text(path, text)   a file's new content;
  with atomic_path(path) as tmp: save(..., tmp)      for writers that want a path (torch.save, savefig);
  with atomic_dir(path) as tmp: ...                  a directory replaced as a whole (checkpoints);
  with output_lock(path): ...                        stop a second run into the same --out at once.

Each writes to `.NAME.tmp-PID` in the same directory (same file system, so the rename is atomic),
fsyncs it, renames it over NAME and fsyncs the directory, so that after a crash or a full disk a
reader finds the old content or the new, never half of it. On any exception the temporary is removed;
one that a kill -9 left behind names a process that is no longer alive, and remove_stale() deletes it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core import UserError

_TMP = re.compile(r".*\.tmp-(\d+)$")  # ours: .NAME.tmp-PID; older respaths wrote NAME.tmp-PID


def os_error_of(e: Exception, path: str | os.PathLike) -> OSError | None:
    """The OSError that a library's own error type stands for when a write fails, naming path, or None:
    safetensors says "(os error 28)"; torch.save says "unexpected pos" when the disk took less than it
    wrote (a full disk)."""
    text = str(e)
    code = re.search(r"\(os error (\d+)\)", text)
    if code:
        return OSError(int(code[1]), os.strerror(int(code[1])), str(path))
    if "unexpected pos" in text:
        return OSError(errno.ENOSPC, "No space left on device (torch.save wrote only part of the file)", str(path))
    return None


def tmp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def old_path(path: str | os.PathLike) -> Path:
    """Where atomic_dir keeps the previous directory during its swap (see recover_dir)."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable; a file system that cannot fsync a directory is let be."""
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


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends normally, what was written there
    becomes `path`. The block's exception, or a failing fsync/rename, leaves `path` as it was.
    The temporary's name ends in `.tmp-PID`: a writer that goes by the suffix (savefig) needs format=."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        error = os_error_of(e, path) if isinstance(e, Exception) and not isinstance(e, OSError) else None
        if error is None:
            raise
        raise error from None
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8, newlines as given (no translation), so a file's bytes are the same on every OS."""
    write_bytes(path, text.encode("utf-8"))


def recover_dir(path: str | os.PathLike) -> Path:
    """Finish a swap that a crash interrupted: if only `<dir>.old` is left, it is the directory."""
    path = Path(path)
    if not path.exists() and old_path(path).is_dir():
        os.replace(old_path(path), path)
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; when the block ends normally it replaces
    `path` as a whole, with two renames (path -> path.old, tmp -> path), so that a crash at any moment
    leaves the old directory or the new one (recover_dir finishes an interrupted swap). A library's
    error that stands for a failed write (os_error_of: a full disk, as torch or safetensors report it)
    is raised as the OSError naming `path`."""
    path = recover_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = tmp_path(path)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        fsync_dir(tmp)
        if path.exists():
            _remove(old_path(path))
            os.replace(path, old_path(path))
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        error = os_error_of(e, path) if isinstance(e, Exception) and not isinstance(e, OSError) else None
        if error is None:
            raise
        raise error from None
    fsync_dir(path.parent)
    _remove(old_path(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in `directory` whose writer (the PID in the name) is no longer alive."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.fullmatch(p.name)
        if m and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            _remove(p)
            removed.append(p)
    return removed


@contextmanager
def output_lock(lock_file: str | os.PathLike, out: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive OS lock on `lock_file` (created, and removed again at the end) while the block
    runs; a second holder is refused at once with a UserError naming `out`. The kernel drops the lock
    of a killed process, so a kill -9 leaves at most an unlocked file, which the next run takes over."""
    lock_file = Path(lock_file)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"another respaths run is writing to {out}; wait for it to finish or choose "
                                f"another --out.") from None
            raise
        try:  # the holder before us may have removed the file just before we locked it: lock the new one
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            lock_file.unlink()  # while still locked, so no one locks a file that is about to go
        except FileNotFoundError:
            pass
        os.close(fd)
