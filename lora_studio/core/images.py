"""Opening the artist's images: one RGB picture out of whatever Pillow can read, or a clear reason why not.

Every caller (the scan, the dataset doctor, latent caching, the GUI's thumbnails) goes through
`load_rgb`, so an image trains the same way it previews, and one bad file is named before a run starts
instead of crashing it mid-caching.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from lora_studio.core.errors import UserError

# Extensions the scan picks up (lower case, with the dot). All of these are formats Pillow opens by
# content, so a JPEG saved as .png still loads; the extension only says "this is meant to be an image".
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # the EXIF orientations that turn the picture by 90°
_WHITE = (255, 255, 255)
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageError(UserError):
    code = "bad_image"

    def __init__(self, path: Path, reason: str, hint: str = ""):
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"The image {self.path} {reason}.",
            hint=hint or "Re-export it from your image editor, or leave it out of the dataset.",
        )


def is_image_file(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _open(path: Path) -> Image.Image:
    """Image.open with every failure turned into an ImageError that names the file and the reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "does not exist", hint="Rescan the dataset folder.") from None
    except OSError as e:
        raise ImageError(path, f"cannot be read ({e.strerror or e})", hint="Check the file's permissions.") from None
    if size == 0:
        raise ImageError(path, "is empty (0 bytes)", hint="Copy the image again from where it came from, or delete it.")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) on huge images; an artist's 20,000 px scan is legitimate.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(
            path,
            "is not an image that can be opened (perhaps another kind of file renamed with an image extension)",
            hint="Open it in an image editor and save it as PNG or JPEG, or remove it.",
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(path, "is too large to open safely", hint="Scale it down below 100 megapixels.") from None
    except OSError as e:
        if e.errno is None:  # Pillow's own complaint about the bytes ("Truncated File Read"), not the disk's
            raise ImageError(path, _decode_reason(e)) from None
        raise ImageError(path, f"cannot be read ({e.strerror or e})", hint="Check the file's permissions.") from None


def _orientation(img: Image.Image) -> int:
    try:
        if img.format == "PNG" and "exif" not in img.info:
            # PngImageFile.getexif decodes the whole image to look for an eXIf chunk after the pixels.
            # The header path reads only what came before them (eXIf almost always does).
            exif = Image.Image.getexif(img)
        else:
            exif = img.getexif()
        value = exif.get(_ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block says nothing about the pixels; treat it as "no rotation"
        return 1
    return value if isinstance(value, int) else 1


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the picture will be shown, from the file header only (no pixel decoding)."""
    with _open(path) as img:
        w, h = img.size
        if _orientation(img) in _SWAPPING_ORIENTATIONS:
            w, h = h, w
    if w <= 0 or h <= 0:
        raise ImageError(Path(path), f"has no pixels ({w}×{h})")
    return w, h


def load_rgb(path: Path) -> Image.Image:
    """The whole picture, decoded, turned upright, in 8-bit RGB; transparency is laid over white."""
    path = Path(path)
    return to_rgb(_load_upright(path), path)


def _load_upright(path: Path) -> Image.Image:
    """The picture decoded whole and turned upright by its EXIF orientation, in its own mode."""
    with _open(path) as img:
        try:
            img.load()  # decode every byte now, so a truncated file fails here and not in the training loop
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(path, _decode_reason(e)) from None
        try:
            return ImageOps.exif_transpose(img) if _orientation(img) != 1 else img.copy()
        except (OSError, ValueError):
            return img.copy()


def _decode_reason(e: BaseException) -> str:
    text = str(e)
    if "truncated" in text.lower() or "broken data stream" in text or isinstance(e, EOFError):
        return "is cut short (truncated): the file ends before the picture does"
    return f"could not be decoded ({text or type(e).__name__})"


def to_rgb(img: Image.Image, path: Path | None = None) -> Image.Image:
    """8-bit RGB from any Pillow mode: alpha and palette transparency over white, 16-bit scaled down."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_DEPTH_MODES:
        # (A tRNS colour on a 16-bit greyscale PNG is ignored: it is vanishingly rare in artwork.)
        return _to_8bit(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr
    except ValueError:
        raise ImageError(
            Path(path or "?"), f"uses the colour mode {mode}, which cannot be turned into RGB",
            hint="Open it in an image editor and save it as an RGB PNG or JPEG.",
        ) from None


def _to_8bit(img: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 (a mostly white picture); scale the range instead.
    import numpy as np  # only for 16-bit and float images: keeps numpy out of the window's start-up
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        scaled = a * 255.0 if a.max(initial=0.0) <= 1.0 else a  # float images are usually 0..1
    else:
        scaled = a.astype(np.float64) / 257.0  # 0..65535 → 0..255 (I holds 16-bit PNG/TIFF data too)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def conversion_notes(path: Path) -> list[str]:
    """What load_rgb changes about this file, in plain words, from its header (the doctor's odd_mode)."""
    notes: list[str] = []
    with _open(path) as img:
        mode = img.mode
        if mode == "CMYK":
            notes.append("is in CMYK (print) colours, converted to RGB")
        elif mode in _HIGH_DEPTH_MODES:
            notes.append("has 16-bit or floating-point depth, reduced to 8-bit")
        elif mode in ("P", "PA"):
            notes.append("uses a colour palette, converted to full RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in img.info and mode not in _HIGH_DEPTH_MODES):
            notes.append("has transparent areas, which train as white")
        if _orientation(img) != 1:
            notes.append("is stored sideways or flipped; it is turned upright from its EXIF orientation")
    return notes


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_alpha(path: Path) -> bool:
    """Whether the picture carries transparency (an alpha channel or a palette's transparent colour), from its header."""
    with _open(path) as img:
        return img.mode in _ALPHA_MODES or ("transparency" in img.info and img.mode not in _HIGH_DEPTH_MODES)


def load_mask(path: Path, *, alpha: bool) -> Image.Image:
    """A training mask as 8-bit greyscale ("L"), upright like its image: 255 trains, 0 is ignored.

    alpha=True reads `path`'s alpha channel (the image is its own mask); otherwise `path` is a mask file,
    read as brightness (a colour mask counts by its grey value, its own transparency is ignored)."""
    upright = _load_upright(Path(path))
    if alpha:
        return upright.convert("RGBA").getchannel("A")
    if upright.mode in _HIGH_DEPTH_MODES:
        return _to_8bit(upright)
    return upright.convert("L")
