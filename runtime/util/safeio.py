"""Opening files from folders tseg-rt does not control: regular files only, never blocking, and
inside a results folder never through a symbolic link.

A folder of slides, a results folder on shared storage or a model's folder may hold a FIFO, a
socket or a device under a slide's name (``open()`` of a FIFO blocks until a writer comes), or a
symbolic link planted where tseg-rt reads or writes (a lock file linked to a file elsewhere). The
rules, used wherever the project opens such a file:

* :func:`check_regular` (``stat`` or ``lstat``, ``S_ISREG``) refuses anything but a regular file
  before it is opened, e.g. while searching a folder;
* :func:`open_regular` opens with ``O_NONBLOCK`` (a FIFO or device swapped in after the check
  cannot block) and checks the opened file with ``fstat``;
* ``below=FOLDER`` (a results folder): every path component after ``FOLDER`` is opened with
  ``O_NOFOLLOW`` relative to its parent's descriptor, so neither the file nor a folder on the way
  can be a link out of ``FOLDER``, and nothing can swap one in between the check and the open;
* :func:`ensure_folder` makes a cache folder inside a results folder a real folder (a link
  planted in its place is removed, never written through).

Refusals are :class:`UnsafeFileError`, an ``OSError`` (so existing ``except OSError`` handling
reports them), whose message says what the path is instead of a regular file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

#: What :func:`read_bytes` reads at most unless told otherwise (tseg-rt's own JSON files are a few
#: KiB; a results folder's ``summary.json`` replaced by a huge file must not exhaust memory).
DEFAULT_READ_LIMIT = 16 * 2**20

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


class UnsafeFileError(OSError):
    """A path that is not a regular file (FIFO, socket, device, folder), or a symbolic link where
    none is followed. ``str()`` names the path and what it is."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        super().__init__(errno.EINVAL, what, str(path))
        self.what = what

    def __str__(self) -> str:
        return f"{self.filename}: {self.what}"


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, in words (for messages)."""
    for test, words in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file"


def not_regular(mode: int) -> str:
    """The refusal for a file of ``mode`` that is not regular."""
    return f"is {kind_of(mode)}, not a regular file; tseg-rt reads only regular files"


def check_regular(path: str | os.PathLike[str], follow: bool = True) -> os.stat_result:
    """``stat`` (``lstat`` when not ``follow``) of ``path``, or :class:`UnsafeFileError` when it is
    not a regular file (a link, when not following). Never opens the file."""
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(path, not_regular(st.st_mode) if not stat.S_ISLNK(st.st_mode) else _LINK)
    return st


def is_regular(path: str | os.PathLike[str], follow: bool = True) -> bool:
    """Whether ``path`` is a regular file (False for anything else and for missing paths)."""
    try:
        check_regular(path, follow)
    except OSError:
        return False
    return True


_LINK = "is a symbolic link; tseg-rt does not follow links inside a results folder"


def _parts_below(path: Path, below: Path) -> list[str]:
    try:
        rel = path.relative_to(below)
    except ValueError:
        raise ValueError(f"{path} is not inside {below}") from None
    parts = [p for p in rel.parts if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path} is not inside {below}")
    return parts


def _folder_fd(folder: Path, below: Path) -> int:
    """A descriptor of ``folder`` (``below`` itself or a folder inside it), no component after
    ``below`` a link."""
    fd = os.open(below, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    walked = below
    for part in _parts_below(folder, below):
        walked = walked / part
        try:
            inner = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(walked):
                raise UnsafeFileError(walked, _LINK) from None
            raise type(exc)(exc.errno, exc.strerror, str(walked)) from None
        os.close(fd)
        fd = inner
    return fd


def open_fd(path: str | os.PathLike[str], flags: int = os.O_RDONLY, follow: bool = True,
            below: str | os.PathLike[str] | None = None) -> int:
    """A descriptor of the regular file ``path`` (see the module docstring); the caller closes it.
    ``flags`` may add ``O_RDWR``/``O_CREAT`` (a new file gets mode 0o644); ``O_NONBLOCK`` stays
    set, which changes nothing for regular files. With ``below``, ``path`` must lie inside it."""
    p = Path(path)
    flags |= _O_NONBLOCK | _O_CLOEXEC | _O_BINARY
    if below is None:
        try:
            fd = os.open(p, flags | (0 if follow else _O_NOFOLLOW), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow:
                raise UnsafeFileError(p, _LINK) from None
            raise
    else:
        if not _parts_below(p, Path(below)):
            raise ValueError(f"{p} is not a file inside {below}")
        folder = _folder_fd(p.parent, Path(below))
        try:
            fd = os.open(p.name, flags | _O_NOFOLLOW, 0o644, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError(p, _LINK) from None
            raise type(exc)(exc.errno, exc.strerror, str(p)) from None  # the whole path in the message
        finally:
            os.close(folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(p, not_regular(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike[str], follow: bool = True,
                 below: str | os.PathLike[str] | None = None) -> BinaryIO:
    """``open(path, "rb")`` for a regular file only, never blocking (see :func:`open_fd`)."""
    return os.fdopen(open_fd(path, os.O_RDONLY, follow, below), "rb")


def read_bytes(path: str | os.PathLike[str], follow: bool = True, below: str | os.PathLike[str] | None = None,
               limit: int | None = DEFAULT_READ_LIMIT) -> bytes:
    """The content of the regular file ``path``; :class:`UnsafeFileError` when it holds more than
    ``limit`` bytes (None: no limit)."""
    with open_regular(path, follow, below) as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise UnsafeFileError(path, f"holds more than {limit} bytes, more than tseg-rt expects here")
    return data


def read_text(path: str | os.PathLike[str], follow: bool = True, below: str | os.PathLike[str] | None = None,
              limit: int | None = DEFAULT_READ_LIMIT, encoding: str = "utf-8") -> str:
    """:func:`read_bytes` decoded (``UnicodeDecodeError`` when it is not ``encoding``)."""
    return read_bytes(path, follow, below, limit).decode(encoding)


def read_json(path: str | os.PathLike[str], follow: bool = True, below: str | os.PathLike[str] | None = None,
              limit: int | None = DEFAULT_READ_LIMIT) -> Any:
    """:func:`read_text` parsed as JSON (``ValueError`` subclasses when it is not UTF-8 JSON)."""
    return json.loads(read_text(path, follow, below, limit))


def ensure_folder(path: str | os.PathLike[str], below: str | os.PathLike[str]) -> Path:
    """Make ``path`` (inside ``below``) and its parents up to ``below`` real folders.

    A component that is a symbolic link (or a FIFO, socket or file) where a folder should be is
    removed first, with a warning, so nothing is ever written through it; the link's target is not
    touched. ``OSError`` when that fails."""
    p, base = Path(path), Path(below)
    walked = base
    for part in _parts_below(p, base):
        walked = walked / part
        try:
            st = os.lstat(walked)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            log.warning("%s %s where tseg-rt keeps a folder; removed (what it pointed to is untouched)",
                        walked, "was a symbolic link" if stat.S_ISLNK(st.st_mode) else f"was {kind_of(st.st_mode)}")
            os.unlink(walked)
            st = None
        if st is None:
            try:
                os.mkdir(walked)
            except FileExistsError:  # made meanwhile by another process: check it again
                if not stat.S_ISDIR(os.lstat(walked).st_mode):
                    raise UnsafeFileError(walked, "appeared as something other than a folder while tseg-rt made it")
    return p
