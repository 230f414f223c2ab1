"""One exception root for everything tseg-rt raises on purpose.

Library code raises these; only the command line turns them into a message and a non-zero
exit status. Each message names the file concerned and, where there is one, the fix.
Subclasses also inherit the matching built-in exception where that helps callers
(``FileNotFoundError``, ``ValueError``), as WSInfer does.
"""

from __future__ import annotations

from pathlib import Path


def _location(path: "str | Path") -> "str | Path":
    """A slide's location: a Path, or a URL kept as text (``Path`` would fold its ``//``)."""
    if isinstance(path, str) and "://" in path:
        return path
    return Path(path)


class TsegError(Exception):
    """Root of all tseg-rt errors."""

    def cli_message(self) -> str:
        """The message as the command line shows it (its fix in command-line terms)."""
        return str(self)


class InvalidArgumentError(TsegError, ValueError):
    """A caller passed a value the library cannot use (message names the argument)."""


# --- slides -------------------------------------------------------------------------------


class SlideError(TsegError):
    """A slide could not be used. ``path`` names it.

    ``fix`` maps ``"api"`` and ``"cli"`` to the fix in each audience's terms (``mpp=`` for
    Python callers, ``--mpp`` on the command line); ``str()`` gives the API one.
    """

    def __init__(self, path: str | Path, message: str, fix: dict[str, str] | None = None) -> None:
        self.path = _location(path)
        self.message = message
        self.fix = dict(fix or {})
        api = f" {self.fix['api']}" if "api" in self.fix else ""
        super().__init__(f"{self.path}: {message}{api}")

    def cli_message(self) -> str:
        cli = f" {self.fix['cli']}" if "cli" in self.fix else ""
        return f"{self.path}: {self.message}{cli}"


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide file does not exist."""


class UnsupportedSlideError(SlideError):
    """Neither OpenSlide nor the tifffile reader can open the file (or it is corrupt)."""


class NonBrightfieldError(UnsupportedSlideError):
    """The slide is not H&E brightfield (fluorescence, multiplex, grey), which the model was not
    trained on; ``allow_non_brightfield`` / ``--allow-non-brightfield`` segments it anyway."""


class UnsupportedPixelsError(UnsupportedSlideError):
    """The file is read, but its pixels are not 8-bit RGB(A) (grey channels, 16-bit samples)."""


class MissingMppError(SlideError):
    """The slide carries no microns-per-pixel metadata."""


class ImplausibleMppError(SlideError):
    """The slide's microns-per-pixel metadata is outside any plausible range for a WSI."""


class ResolutionError(SlideError):
    """The requested resolution would need upsampling, which tseg-rt never does."""


class SlideReadError(SlideError):
    """Reading pixels failed part-way (truncated or corrupt tiles)."""


class SlideChangedError(SlideReadError):
    """The slide's file (or a file of its DICOM series) changed while it was read."""


class ImplausibleSizeError(SlideError):
    """The slide claims a physical size no glass slide has (its metadata is probably wrong)."""


class SlideTooLargeError(SlideError):
    """Processing the slide would need more memory than the machine has."""


class NotRegularFileError(SlideError):
    """The slide path is a FIFO, socket, device or other non-regular file."""


# --- models, engines, contracts -------------------------------------------------------------


class ModelError(TsegError):
    """An ONNX model, engine or checkpoint cannot be used."""

    def __init__(self, path: str | Path | None, message: str) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if path is not None else message)


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model or engine file does not exist."""


class ContractError(ModelError):
    """The model contract (metadata) is missing, malformed or contradicts the graph."""


class BackendUnavailableError(TsegError):
    """An optional backend (TensorRT, CUDA, onnxruntime-gpu) is not installed or has no GPU."""


class DeviceError(TsegError):
    """A GPU operation failed while running (a CUDA error, a kernel fault, out of device memory)."""


class EngineMismatchError(ModelError):
    """A TensorRT engine was built for another GPU or TensorRT version."""


# --- annotations, outputs, batches ----------------------------------------------------------


class AnnotationError(TsegError):
    """An annotation file cannot be read or does not fit its slide."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


class OutputError(TsegError):
    """Outputs cannot be written (folder not writable, disk full, ...)."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


class SlideLockedError(OutputError):
    """Another process holds the lock on this slide's output folder."""


class NoSlidesFoundError(TsegError, FileNotFoundError):
    """The inputs of a batch contain no readable slide files."""


class ClusterError(TsegError):
    """A distributed run cannot start or go on (no cluster, no worker could load the model)."""


class DicomWebError(TsegError):
    """A DICOMweb server could not be reached, refused a request or answered with an error.

    ``url`` names the resource (never with credentials), ``status`` the HTTP status if any."""

    def __init__(self, url: str, message: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        self.message = message
        super().__init__(f"{url}: {message}")
