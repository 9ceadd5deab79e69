"""One robust image loader for every workload: hostile files never crash a run.

`load_image` returns an RGB PIL image plus notes, or raises `ImageRejected` with a short
reason that the caller records as the sample's skip reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000   # above this Pillow's decompression-bomb guard refuses the file
MAX_SIDE = 4096           # longer sides are downscaled: no VLM here looks at more


class ImageRejected(Exception):
    """The file is missing, corrupt, or refused; str(e) is the reason to record."""


@dataclass
class LoadedImage:
    image: Image.Image
    notes: list[str] = field(default_factory=list)


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit gray: rescale the actual range to 8 bits instead of saturating at 255.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        notes.append(f"{im.mode} rescaled to 8 bits")
        im = Image.fromarray(arr.round().astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
        notes.append("alpha composited on white")
    return im.convert("RGB")


def load_image(path: str | Path, max_side: int = MAX_SIDE) -> LoadedImage:
    notes: list[str] = []
    path = Path(path)
    if not path.is_file():
        raise ImageRejected("image file missing")
    try:
        # Pillow's warnings about a damaged file (bad EXIF, truncated tags) become notes on the
        # sample instead of console noise; a decompression-bomb warning becomes a refusal.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageRejected(f"image too large ({im.width}x{im.height} pixels; decompression-bomb guard)")
                if getattr(im, "n_frames", 1) > 1:
                    notes.append(f"animated ({im.n_frames} frames): first frame used")
                    im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = _to_rgb(im, notes)
        notes += sorted({f"Pillow: {str(w.message).strip()[:80]}" for w in caught})[:3]
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageRejected("image too large (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageRejected(f"corrupt image ({(str(e).splitlines() or [''])[0][:80]})") from None
    except Exception as e:  # noqa: BLE001
        # Pillow's decoders raise what their parsing code happens to hit on hostile bytes
        # (TypeError "Missing dimensions" in a TIFF's second frame, KeyError, struct.error...):
        # all of them mean the file is corrupt, and none may end the run.
        raise ImageRejected(f"corrupt image ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]})") from None
    if max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BICUBIC)
        notes.append(f"downscaled to longest side {max_side}")
    return LoadedImage(rgb, notes)
