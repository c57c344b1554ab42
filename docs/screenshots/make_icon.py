"""Draw the module and extension icon: SegResMambaSlicer/Resources/Icons/SegResMambaSlicer.png.

A 128 x 128 PNG, as Slicer's module list and the Extensions Catalog want: an axial slice
silhouette with coloured organ segments and a snake-like scan path (the Mamba) through it.
Drawn at 4x and downsampled, so the edges are smooth. Run from the repository root:
``.venv/bin/python docs/screenshots/make_icon.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

ICON = (
    Path(__file__).resolve().parents[2] / "SegResMambaSlicer/Resources/Icons/SegResMambaSlicer.png"
)
SIZE, SCALE = 128, 4


def main() -> Path:
    s = SIZE * SCALE
    image = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, s - 1, s - 1), radius=s // 7, fill=(24, 32, 48, 255))
    # body outline (an axial CT slice)
    draw.ellipse((0.10 * s, 0.20 * s, 0.90 * s, 0.82 * s), fill=(92, 98, 110, 255))
    # organs, in the task registry's colours: liver, spleen, kidneys, aorta
    draw.ellipse((0.16 * s, 0.30 * s, 0.52 * s, 0.62 * s), fill=(221, 130, 101, 255))
    draw.ellipse((0.62 * s, 0.30 * s, 0.82 * s, 0.52 * s), fill=(157, 108, 162, 255))
    draw.ellipse((0.27 * s, 0.58 * s, 0.40 * s, 0.74 * s), fill=(185, 102, 83, 255))
    draw.ellipse((0.60 * s, 0.58 * s, 0.73 * s, 0.74 * s), fill=(185, 102, 83, 255))
    draw.ellipse((0.46 * s, 0.55 * s, 0.54 * s, 0.63 * s), fill=(224, 97, 76, 255))
    # the selective scan: a snake crossing the slice
    points = []
    for step in range(161):
        t = step / 160
        x = (0.08 + 0.84 * t) * s
        y = (0.50 + 0.17 * math.sin(2.6 * math.pi * t)) * s
        points.append((x, y))
    draw.line(points, fill=(20, 24, 32, 255), width=int(0.085 * s), joint="curve")
    draw.line(points, fill=(111, 214, 96, 255), width=int(0.055 * s), joint="curve")
    head = points[-1]
    r = 0.045 * s
    draw.ellipse((head[0] - r, head[1] - r, head[0] + r, head[1] + r), fill=(111, 214, 96, 255))
    draw.ellipse(
        (head[0] - r / 4, head[1] - r / 2, head[0] + r / 4, head[1]), fill=(20, 24, 32, 255)
    )
    icon = image.resize((SIZE, SIZE), Image.LANCZOS)
    ICON.parent.mkdir(parents=True, exist_ok=True)
    icon.save(ICON, optimize=True)
    return ICON


if __name__ == "__main__":
    print(main())
