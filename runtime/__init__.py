"""tseg-rt runtime: read slides, tile, run a model, merge and post-process. No PyTorch."""

from .errors import TsegError
from .slide import Slide, open_slide

__all__ = ["Slide", "TsegError", "open_slide"]
__version__ = "0.1.0"
