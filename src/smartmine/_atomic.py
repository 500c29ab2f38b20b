"""Crash-safe file writes for the run folder.

Guarantees (POSIX, local file systems):

* :func:`atomic_write_bytes` / :func:`atomic_torch_save` / :func:`atomic_write_text`: after a crash at any moment
  (``SIGKILL``, power loss once the directory entry is on disk), ``path`` holds either its complete previous content
  or the complete new content, never a mix or a prefix. The data goes to a temporary file in the same directory,
  is flushed and ``fsync``-ed, renamed over ``path`` with ``os.replace`` (atomic on POSIX), and the directory is
  ``fsync``-ed so that the rename itself survives a power cut. A failed write removes its temporary file and leaves
  ``path`` untouched. Leftover ``.<name>.*.tmp`` files of a killed writer are harmless and ignored by readers.
* :func:`atomic_append_line`: a line is appended with a single ``os.write`` on an ``O_APPEND`` descriptor and
  ``fsync``-ed. A crash can at worst leave a *partial last line without its newline*; :func:`read_csv_rows` ignores
  such a tail, and the next :func:`atomic_append_line` cuts it off before appending, so a torn line never becomes
  visible as a complete row and never merges with the next one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so that a rename inside it is durable (a no-op where directories cannot be opened)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Context manager yielding a binary file; on a clean exit its content atomically replaces ``path``.

    On an exception inside the block (or during the final rename) the temporary file is removed, ``path`` keeps its
    old content, and the exception propagates.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"path: directory does not exist: {directory}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600 files; give the result the permissions an ordinary open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring for the guarantee)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data: expected bytes, got {type(data).__name__}")
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: streamed into a temporary file, fsync-ed, then renamed."""
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def _cut_torn_tail(fd: int) -> None:
    """If the file behind ``fd`` does not end with a newline, truncate it after its last newline."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    if os.pread(fd, 1, size - 1) == b"\n":
        return
    # Scan backwards in blocks for the last newline; a torn row is short, so this reads one block in practice.
    end = size
    block = 4096
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        pos = chunk.rfind(b"\n")
        if pos >= 0:
            os.ftruncate(fd, start + pos + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def atomic_append_line(path: str | os.PathLike, line: str, encoding: str = "utf-8") -> None:
    """Append one line (a trailing ``"\\n"`` is added if missing) to ``path``, creating it if needed.

    ``line`` must not contain a newline except at its end. The whole line goes out in one ``os.write`` (looping only
    if the kernel writes less) on an ``O_APPEND`` descriptor, then ``fsync``. A torn tail left by an earlier crash is
    cut off first. Single writer per file assumed (the rank-0 process of a run).
    """
    if not isinstance(line, str):
        raise ValueError(f"line: expected a string, got {type(line).__name__}")
    body = line[:-1] if line.endswith("\n") else line
    if "\n" in body or "\r" in body:
        raise ValueError("line: contains a line break before its end; append one line at a time")
    data = (body + "\n").encode(encoding)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _cut_torn_tail(fd)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_lines_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The text of ``path`` up to and including its last newline (a torn last line is dropped); ``""`` if absent."""
    p = Path(path)
    if not p.exists():
        return ""
    data = p.read_bytes()
    end = data.rfind(b"\n")
    return data[: end + 1].decode(encoding) if end >= 0 else ""


def csv_row_line(values: list[Any] | tuple[Any, ...]) -> str:
    """Format ``values`` as one CSV line (with its newline), quoting as needed; refuses values with line breaks."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    text = buf.getvalue()
    if text.count("\n") != 1:
        raise ValueError("values: a CSV value contains a line break, which atomic_append_line cannot keep on one line")
    return text


def read_csv_rows(path: str | os.PathLike, encoding: str = "utf-8") -> list[dict[str, str]]:
    """Read a CSV with a header row into dicts (strings), ignoring a trailing partial line without newline.

    Returns ``[]`` when the file is absent or holds no complete header line. Rows shorter than the header get
    ``""`` for the missing columns rather than ``None``.
    """
    text = complete_lines_text(path, encoding)
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text), restval="")
    return [dict(row) for row in reader]
