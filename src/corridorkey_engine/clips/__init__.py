"""Clips: frame files and folders in, keyed outputs out.

Layered bottom to top: :mod:`.pixels` (channel order, scaling), :mod:`.completeness` (is a PNG/EXR whole),
:mod:`.exr` (the EXR codec), :mod:`.images` (one frame file: read, write atomically), :mod:`.sequences`
(a clip folder's frames: discovery, in-order readers) and :mod:`.pipeline` (readers → engine → writers).
"""

import os

# OpenCV reads this once, when cv2 is first imported: set it before any clips module imports cv2, so an
# OpenCV built with its OpenEXR codec can serve as the EXR fallback (see .exr).
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
