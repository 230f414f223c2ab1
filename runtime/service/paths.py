"""Which slide paths a request may name: only slides inside the service's roots.

A path from a client is untrusted. :meth:`Roots.resolve` accepts it only when

* it is text without NUL characters, at most 4096 characters, and without a ``..`` component
  (refused as written, before anything is resolved: no request walks up a folder);
* it is absolute, or relative to the first root;
* its real path (every symbolic link followed) lies inside one of the roots (also real paths),
  so a link inside a root that leads out of it is refused, and it is not inside the results
  folder;
* it exists and is a slide: a file with a slide extension, a DICOM file, or a folder holding a
  DICOM series; every other file the slide names (a DICOM series' folder, a MIRAX slide's data
  folder and files, VMS/VMU image files, a multi-file OME-TIFF's files:
  :mod:`tseg.runtime.wsi.companions`) must lie inside the roots too and be a regular file, checked
  before a reader opens it;
* its name is not hidden (``.name``: folder search never takes those, and result folders are
  named after slides).

Nothing is opened beyond what deciding this needs (``stat``, the 132-byte DICOM preamble). The
runner checks a job's path again just before it reads the slide, in case the file system changed
in between. Refusals are :class:`PathRefused` with a code (``bad_path``, ``path_traversal``,
``outside_roots``, ``in_results``, ``not_found``, ``not_a_slide``, ``not_readable``) and a message for the client.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

from tseg.runtime.errors import InvalidArgumentError, TsegError
from tseg.runtime.util.safeio import not_regular

MAX_PATH_CHARS = 4096


class PathRefused(TsegError):
    """A client's slide path is not allowed (``code`` says why)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def refusal_for(text: str, exc: OSError) -> PathRefused:
    """The refusal of a path the file system would not even look at (``stat`` failed)."""
    if exc.errno == errno.ENAMETOOLONG:
        return PathRefused("bad_path", f"{text[:200]}...: a name in this path is longer than the file system allows")
    if isinstance(exc, PermissionError):
        return PathRefused("not_readable", f"{text}: the service may not read it (permission denied); let the "
                                           "service's user read the slide and its folder")
    return PathRefused("bad_path", f"{text}: the file system cannot look it up ({exc.strerror or exc})")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Roots:
    """The folders a service may read slides from, and the results folder it must not read."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]], results: str | os.PathLike[str] | None = None) -> None:
        if not roots:
            raise InvalidArgumentError("give at least one root folder (--root): the service reads slides only "
                                       "inside its roots")
        real = []
        for r in roots:
            p = Path(r).expanduser()
            if not p.is_dir():
                raise InvalidArgumentError(f"--root {r}: no such folder")
            real.append(os.path.realpath(p))
        self.folders: tuple[str, ...] = tuple(dict.fromkeys(real))
        self.results = os.path.realpath(results) if results is not None else None

    def __iter__(self):  # noqa: ANN204
        return iter(self.folders)

    def describe(self) -> str:
        return ", ".join(self.folders)

    def contains(self, real_path: str) -> bool:
        return any(_inside(real_path, r) for r in self.folders)

    def resolve(self, text: str) -> Path:
        """The real path of the slide a client named (see the module docstring), or PathRefused."""
        if not isinstance(text, str) or not text.strip():
            raise PathRefused("bad_path", "the slide path is empty")
        if "\x00" in text or len(text) > MAX_PATH_CHARS:
            raise PathRefused("bad_path", f"the slide path must be text of at most {MAX_PATH_CHARS} characters "
                                          "without NUL characters")
        given = Path(text)
        if ".." in given.parts:
            raise PathRefused("path_traversal", f"{text}: '..' is not allowed in slide paths; give the path inside "
                                                "a root without it")
        candidate = given if given.is_absolute() else Path(self.folders[0]) / given
        real = os.path.realpath(candidate)
        if not self.contains(real):
            written_inside = self.contains(os.path.abspath(candidate))
            why = ("leads (through a symbolic link) outside the service's roots" if written_inside
                   else "is outside the service's roots")
            raise PathRefused("outside_roots", f"{text} {why} ({self.describe()}); the service reads slides only "
                                               "inside them")
        if self.results is not None and _inside(real, self.results):
            raise PathRefused("in_results", f"{text} is inside the results folder; results are not slides")
        p = Path(real)
        try:
            if not p.exists():
                raise PathRefused("not_found", f"{text}: no such file or folder")
            if p.name.startswith(".") or given.name.startswith("."):
                raise PathRefused("not_a_slide", f"{text}: hidden files and folders are not taken as slides")
            self._check_kind(text, p)
            self._check_companions(text, p)
        except OSError as exc:  # a name too long, a folder the service may not read, ...
            raise refusal_for(text, exc) from None
        return p

    def _check_kind(self, text: str, p: Path) -> None:
        from tseg.runtime.cohort.slide_lists import SLIDE_SUFFIXES
        from tseg.runtime.wsi.dicom_source import is_dicom_candidate, is_dicom_slide_path

        if p.is_dir():
            if not is_dicom_slide_path(p):
                raise PathRefused("not_a_slide", f"{text} is a folder without DICOM files; give a slide file or "
                                                 "a DICOM series folder")
            return
        if not p.is_file():
            raise PathRefused("not_a_slide", f"{text} is not a regular file")
        if not (p.name.lower().endswith(SLIDE_SUFFIXES) or is_dicom_candidate(p)):
            raise PathRefused("not_a_slide", f"{text} is not a slide file (expected one of "
                                             f"{', '.join(SLIDE_SUFFIXES)}, .dcm, or a DICOM series folder)")

    def _check_companions(self, text: str, p: Path) -> None:
        """Every file the slide names (:func:`~tseg.runtime.wsi.companions.companion_files`) must lie
        inside the roots, outside the results folder, and be a regular file (a folder for a MIRAX
        data folder), checked before any reader opens it. The refusal names the file as the slide
        wrote it and says the same whether or not it exists (no request learns what is outside)."""
        from tseg.runtime.wsi.companions import companion_files

        try:
            companions = companion_files(p)
        except OSError as exc:
            raise PathRefused("not_a_slide", f"{text}: cannot be read ({exc.strerror or exc})") from None
        dicom = p.is_dir() or p.suffix.lower() == ".dcm" or p.suffix == ""
        for entry in companions:
            shown = entry.name if entry.parent == p.parent or entry.parent == p else str(entry)
            real = os.path.realpath(entry)
            in_results = not dicom and self.results is not None and _inside(real, self.results)
            if not self.contains(real) or in_results:
                raise PathRefused("outside_roots", f"{text} names another file ({shown}) that is outside the "
                                                   f"service's roots ({self.describe()}); the service reads only "
                                                   "files inside them: keep a slide's files together in a root")
            try:
                st = os.stat(entry)
            except OSError:
                continue  # missing: the reader says so (the file is inside the roots)
            if not (stat.S_ISREG(st.st_mode) or (stat.S_ISDIR(st.st_mode) and p.suffix.lower() == ".mrxs")):
                if dicom:
                    continue  # beside a DICOM series: the series reader skips what is not a regular file
                raise PathRefused("not_a_slide", f"{text} names {shown}, which {not_regular(st.st_mode)}")
