"""Images as the protocol carries them: base64 data URLs in `image_url` parts.

PNG (default) is lossless, so an adversarial PNG reaches the model with the pixels it was saved
with. JPEG is there because some providers and peers re-encode; quality is a setting.
"""

from __future__ import annotations

import base64
import hashlib
import io

from PIL import Image


def pixel_fingerprint(image: Image.Image) -> str:
    """sha256 of the decoded pixels (mode, size, bytes). The encoded bytes are a function of these
    and the format settings, so the response cache keys on this without encoding the image:
    a fully cached rerun never pays for PNG compression."""
    h = hashlib.sha256(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def encode_image(image: Image.Image, image_format: str = "png", jpeg_quality: int = 90) -> bytes:
    """The bytes sent for `image`: RGB, PNG at the fastest lossless setting, or JPEG at `jpeg_quality`."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    buf = io.BytesIO()
    if image_format == "jpeg":
        rgb.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(data: bytes, image_format: str = "png") -> str:
    return f"data:image/{image_format};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> Image.Image:
    """A data URL back to an RGB image (the server side). ValueError when it is not an image data URL."""
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError("only base64 image data URLs (data:image/png;base64,...) are accepted")
    raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    with Image.open(io.BytesIO(raw)) as im:
        return im.convert("RGB")
