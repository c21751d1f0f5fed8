"""Short animations (an agent's episode) as GIFs: a file in the run folder and an image in
TensorBoard's Images tab, which shows a GIF's frames playing."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass
class Animation:
    """Frames (T, H, W, 3) uint8 played at `fps`, e.g. a rendered episode."""

    frames: np.ndarray
    fps: int = 25

    def gif(self, max_width: int = 300) -> tuple[bytes, int, int]:
        """The frames as an animated GIF, scaled down to at most `max_width` pixels wide:
        (bytes, height, width)."""
        from PIL import Image

        images = [Image.fromarray(frame) for frame in self.frames]
        width, height = images[0].size
        if width > max_width:
            width, height = max_width, max(1, round(height * max_width / width))
            images = [im.resize((width, height), Image.Resampling.BILINEAR) for im in images]
        buffer = io.BytesIO()
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / self.fps), loop=0
        )
        return buffer.getvalue(), height, width
