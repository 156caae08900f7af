"""Data at the boundary: h5 files, image bytes, and the one preprocessing function.

Images are uint8 arrays (m, 64, 64, 3). `preprocess` turns them into network input
X (12288, m): flattened in (row, column, channel) order, scaled to [0, 1], and centred on
the training mean when the model was trained that way. Training, evaluation, the HTTP
endpoint, the Lambda and the SageMaker handler all go through `preprocess`; a test proves it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.errors import DataError, ImageError
from itsacat.fileio import NPZ_ERRORS

IMAGE_SIZE = 64
N_X = IMAGE_SIZE * IMAGE_SIZE * 3
CLASSES = ("non-cat", "cat")
MAX_PIXELS = 50_000_000  # a 50-megapixel JPEG (decoded at 1/8 scale); a 20000×20000 bomb is refused
MAX_PIXELS_FULL_DECODE = 25_000_000  # PNG, GIF, … decode at full size: ≤ 100 MB as RGBA
MIN_SIDE = 16  # smaller images hold too little to classify (a 1×1 pixel is a mistake)
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")


@dataclass(frozen=True)
class Dataset:
    """Photos and their labels (1 = cat)."""

    images: NDArray[np.uint8]  # (m, 64, 64, 3)
    labels: NDArray[np.uint8]  # (m,)
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: NDArray[np.intp]) -> Dataset:
        return Dataset(self.images[idx], self.labels[idx], self.classes)


def load_h5(path: str | Path, split: str) -> Dataset:
    """Read `{split}_set_x`, `{split}_set_y` and `list_classes` from an h5 file, validated."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; run `dvc pull` to fetch the data set")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path} is not a readable HDF5 file ({exc}); run `dvc pull` again"
        ) from None
    with f:
        x_key, y_key = f"{split}_set_x", f"{split}_set_y"
        missing = [k for k in (x_key, y_key, "list_classes") if k not in f]
        if missing:
            raise DataError(
                f"{path} lacks the key(s) {', '.join(missing)}; it holds "
                f"{', '.join(sorted(f.keys())) or 'nothing'} (expected a {split} split file)"
            )
        images = np.asarray(f[x_key][()])
        labels = np.asarray(f[y_key][()])
        classes = tuple(
            c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(f["list_classes"])
        )
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(f"{path}: {x_key} must have shape (m, 64, 64, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{path}: {x_key} must be uint8 pixels, got {images.dtype}")
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{path}: {y_key} has {labels.shape[0]} labels for {images.shape[0]} images"
        )
    if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, (0, 1)).all():
        bad = sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]
        raise DataError(f"{path}: {y_key} must hold only 0 (non-cat) and 1 (cat), found {bad}")
    if len(classes) != 2:
        raise DataError(f"{path}: list_classes must name 2 classes, got {list(classes)}")
    return Dataset(images, labels.astype(np.uint8), classes)


@dataclass(frozen=True)
class Preprocessing:
    """What turns pixels into network input; it travels inside the model."""

    scale: float = 1.0 / 255.0
    mean: NDArray[np.float32] | None = None  # (N_X, 1) training mean after scaling

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": IMAGE_SIZE,
            "layout": "flatten (row, column, channel) into columns",
            "scale": self.scale,
            "center": self.mean is not None,
        }


def fit_preprocessing(images: NDArray[np.uint8], center: bool) -> Preprocessing:
    """The preprocessing fitted on training images: scale, and their mean if `center`."""
    if not center:
        return Preprocessing()
    X = preprocess(images, Preprocessing(), "float64")
    return Preprocessing(mean=X.mean(axis=1, keepdims=True).astype(np.float32))


def preprocess(
    images: NDArray[np.uint8], prep: Preprocessing, dtype: str = "float32"
) -> NDArray[Any]:
    """uint8 images (m, 64, 64, 3) → network input X (12288, m).

    X is stored photo by photo (Fortran order): each column is one photo's pixels, which is
    how the images already lie in memory, so this is a straight scaled copy, and BLAS runs
    the first layer's 12288-wide products on it about 1.4× faster than on pixel-major rows
    (bench/train_speed.py, "direct F").
    """
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ImageError(f"images must have shape (m, 64, 64, 3), got {images.shape}")
    m = images.shape[0]
    X = np.empty((N_X, m), dtype=dtype, order="F")
    np.multiply(images.reshape(m, N_X), prep.scale, out=X.T, casting="unsafe")  # X.T: (m, N_X)
    if prep.mean is not None:
        X -= prep.mean.astype(dtype, copy=False)
    return X


def decode_image(data: bytes, size: int = IMAGE_SIZE) -> NDArray[np.uint8]:
    """Image bytes of any size and mode → (size, size, 3) uint8 RGB.

    EXIF orientation is honoured, the photo is centre-cropped to a square and shrunk, and
    only then is transparency flattened onto white and 16-bit grey scaled to 8 bits, so a
    large image is never copied at full size to do either. JPEGs (and MPOs, the multi-picture
    JPEGs many phones write) are decoded at a reduced scale (`draft`), so a 12-megapixel photo
    costs about as much as a thumbnail. Only the formats in `ALLOWED_FORMATS` are even tried;
    images over `MAX_PIXELS` (JPEG) or `MAX_PIXELS_FULL_DECODE` (formats decoded at full
    size), images under `MIN_SIDE` pixels a side, and 32-bit images are refused with an
    `ImageError` that says why.
    """
    from PIL import Image, ImageFile

    if not data:
        raise ImageError("the image is empty (0 bytes); send the bytes of a JPEG or PNG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # EXIF cut short: Pillow keeps what it read (the photo stays upright) and warns
            # once per process on stderr; the photo is fine, so the warning goes no further
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            is_jpeg = img.format in _JPEG_FORMATS
            # libjpeg holds every DCT coefficient of a progressive JPEG until its last scan,
            # whatever the scale: 6 bytes a pixel at 4:4:4 (a 50 MP one, 300 MB), so it has
            # the limit of the formats decoded whole. Baseline JPEGs stream at 1/8 scale.
            progressive = is_jpeg and bool(img.info.get("progressive"))
            limit = MAX_PIXELS if is_jpeg and not progressive else MAX_PIXELS_FULL_DECODE
            if width * height > limit:
                kind = f"progressive {img.format}" if progressive else img.format
                raise ImageError(
                    f"the {kind} image is {width}×{height} pixels, more than the "
                    f"{limit:,} allowed; send a smaller photo"
                    + (" or a baseline (non-progressive) JPEG" if progressive else "")
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"the image is {width}×{height} pixels, too small to classify; send a "
                    f"photo at least {MIN_SIDE}×{MIN_SIDE} (64×64 or larger is best)"
                )
            if is_jpeg and isinstance(img, ImageFile.ImageFile):
                scale = max(1, min(width, height) // (2 * size))
                img.draft("RGB", (max(size, width // scale), max(size, height // scale)))
                # Feed libjpeg the whole in-memory file in one call rather than Pillow's
                # default 64 KB slices: each slice is a copy and a Python round trip, which
                # cost ~0.4 ms of the ~17 ms a 1.4 MB photo takes (bench/serve_load.py).
                img.decodermaxblock = max(img.decodermaxblock, len(data))
            img = _resizable(_upright(img))
            w, h = img.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
            return np.asarray(_to_rgb(img), dtype=np.uint8)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"the {len(data):,} bytes are not a {', '.join(ALLOWED_FORMATS)} image; "
            "send the bytes of a photo file"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses before it names the format; JPEG's signature is enough to tell
        # which of our limits the image broke (both are below Pillow's).
        if data.startswith(b"\xff\xd8\xff"):
            kind, limit = "a JPEG", MAX_PIXELS
        else:
            kind, limit = "a PNG, GIF, BMP, WEBP or TIFF image", MAX_PIXELS_FULL_DECODE
        raise ImageError(
            f"the image is larger than the {limit:,} pixels allowed for {kind}; "
            "send a smaller photo"
        ) from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        TypeError,
        IndexError,
        KeyError,
        struct.error,
    ) as exc:
        # Pillow's parsers raise any of these on malformed bytes.
        raise ImageError(
            f"the bytes are not a readable image ({exc}); send a complete JPEG or PNG file"
        ) from None


# MPO is the multi-picture JPEG many phones write; Pillow opens it as a JPEG subclass.
_JPEG_FORMATS = ("JPEG", "MPO")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_UNSUPPORTED_DEPTH = "images are not supported; send an 8-bit or 16-bit JPEG or PNG"


def _resizable(img: Any) -> Any:
    """`img` in a mode that Pillow shrinks faithfully, converted no more than that needs.

    Transparency stays as RGBA or LA (Pillow resamples those with premultiplied alpha), and
    16-bit grey as I: both are flattened to RGB by `_to_rgb` after the shrink, on 64×64
    pixels rather than on full-size copies. `convert("RGB")` would clip 16-bit grey at 255
    (a photo comes out white), so it is kept for the modes it converts faithfully.
    """
    if img.mode in ("RGB", "L", "RGBA", "LA"):
        return img
    if img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode in _SIXTEEN_BIT_MODES:
        return img.convert("I")
    if img.mode == "I":
        low, high = img.getextrema()
        if low < 0 or high > 65535:
            raise ImageError(f"32-bit integer {_UNSUPPORTED_DEPTH}")
        return img  # 16-bit grey held in 32 bits, as TIFF writes it
    if img.mode == "F":
        # no convention says what a float pixel's brightness is (0-1, 0-255, HDR …)
        raise ImageError(f"32-bit float {_UNSUPPORTED_DEPTH}")
    return img.convert("RGB")


def _to_rgb(img: Any) -> Any:
    """A shrunk image from `_resizable` as RGB: transparency flattened onto white, 16-bit
    grey scaled to 8 bits (value/257, rounded)."""
    from PIL import Image

    if img.mode == "I":
        img = img.point(_eight_bit_table(), "L")
    elif img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


@functools.cache
def _eight_bit_table() -> list[int]:
    """16-bit value → 8-bit value: v/257 rounded, so 0 → 0, 65535 → 255 and v·257 → v."""
    return [(v + 128) // 257 for v in range(65536)]


_EXIF_KEYS = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")
# EXIF orientation → the `PIL.Image.Transpose` member that makes the photo upright
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def _upright(img: Any) -> Any:
    """`img` loaded and turned as its EXIF orientation says (`ImageOps.exif_transpose`'s
    effect, without parsing EXIF for the many photos that carry none)."""
    from PIL import Image

    orientation = 1
    if img.format == "TIFF" or any(k in img.info for k in _EXIF_KEYS):
        orientation = img.getexif().get(0x0112, 1)
    img.load()
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(Image.Transpose[method])


def with_mirrored(dataset: Dataset) -> Dataset:
    """The photos followed by their left-right mirror images (same labels): a cat seen in
    a mirror is still a cat, and twice the photos regularise a network this small."""
    return Dataset(
        np.concatenate([dataset.images, dataset.images[:, :, ::-1]]),
        np.concatenate([dataset.labels, dataset.labels]),
        dataset.classes,
    )


def shift_moves(pixels: int) -> tuple[tuple[int, int], ...]:
    """The (dy, dx) of each moved copy `with_shifted` adds, in its order: output pixel (r, c)
    copies source (clip(r+dy), clip(c+dx)). `itsacat.copies` relies on this layout."""
    s = pixels
    return ((-s, 0), (s, 0), (0, -s), (0, s)) if s else ()


def with_shifted(dataset: Dataset, pixels: int) -> Dataset:
    """The photos followed by four copies moved `pixels` up, down, left and right (same
    labels), the edge rows and columns repeated into the gap. The network sees pixels, not
    shapes, so a cat a little off-centre is a new photo to it; these copies teach it that
    the position does not matter."""
    if pixels == 0:
        return dataset
    s, n = pixels, dataset.images.shape[1]
    padded = np.pad(dataset.images, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    moved = [padded[:, s + dy : s + dy + n, s + dx : s + dx + n] for dy, dx in shift_moves(s)]
    return Dataset(
        np.concatenate([dataset.images, *moved]),
        np.concatenate([dataset.labels] * 5),
        dataset.classes,
    )


def stratified_split(
    labels: NDArray[np.uint8], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices (train, val) with about `fraction` of each class in val, both sorted."""
    if fraction <= 0:
        return np.arange(labels.shape[0]), np.arange(0)
    val: list[NDArray[np.intp]] = []
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        n_val = round(fraction * idx.shape[0])
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(labels.shape[0]), val_idx)
    return train_idx, val_idx


def training_set(
    train: Dataset, center: bool, flip: bool, shift: int = 0
) -> tuple[Dataset, Preprocessing]:
    """The photos that will train (mirrored copies added when `flip`, then moved copies of
    those when `shift` > 0) and the preprocessing fitted on exactly those."""
    if flip:
        train = with_mirrored(train)
    train = with_shifted(train, shift)
    return train, fit_preprocessing(train.images, center)


def split_and_fit(
    train_all: Dataset, val_fraction: float, seed: int, center: bool, flip: bool, shift: int = 0
) -> tuple[Dataset, Dataset, Preprocessing]:
    """What the prepare stage does to the training file: a stratified, seeded validation
    split, then `training_set` on the rest. → (train, val, preprocessing)."""
    tr_idx, va_idx = stratified_split(train_all.labels, val_fraction, np.random.default_rng(seed))
    train, prep = training_set(train_all.subset(tr_idx), center, flip, shift)
    return train, train_all.subset(va_idx), prep


def network_xy(
    dataset: Dataset, prep: Preprocessing, dtype: str = "float32"
) -> tuple[NDArray[Any], NDArray[Any]]:
    """X (12288, m) through `preprocess`, and labels Y (1, m) in the same dtype."""
    return preprocess(dataset.images, prep, dtype), dataset.labels.reshape(1, -1).astype(dtype)


def find_duplicates(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> list[tuple[int, int]]:
    """Pairs (i, j) where photo a[i] is pixel-for-pixel photo b[j]."""
    seen: dict[bytes, list[int]] = {}
    for i, img in enumerate(a):
        seen.setdefault(hashlib.sha256(img.tobytes()).digest(), []).append(i)
    pairs = []
    for j, img in enumerate(b):
        for i in seen.get(hashlib.sha256(img.tobytes()).digest(), []):
            pairs.append((i, j))
    return pairs


def save_split(path: str | Path, dataset: Dataset) -> None:
    """Write a prepared split (images, labels) as an .npz, atomically."""
    from itsacat.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, images=dataset.images, labels=dataset.labels, classes=np.asarray(dataset.classes))
    atomic_write_bytes(Path(path), buf.getvalue())


def load_split(path: str | Path) -> Dataset:
    """Read a split written by `save_split`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; run the prepare stage (`dvc repro prepare`)")
    arrays = _read_npz(path, ("images", "labels", "classes"))
    return Dataset(arrays["images"], arrays["labels"], tuple(str(c) for c in arrays["classes"]))


def save_preprocessing(directory: str | Path, prep: Preprocessing) -> None:
    """Write the fitted preprocessing (its JSON description and the mean, if any)."""
    import json

    from itsacat.fileio import atomic_write_bytes, atomic_write_text

    directory = Path(directory)
    atomic_write_text(directory / "preprocessing.json", json.dumps(prep.to_json(), indent=2))
    buf = io.BytesIO()
    mean = prep.mean if prep.mean is not None else np.zeros((0, 1), np.float32)
    np.savez(buf, mean=mean)
    atomic_write_bytes(directory / "preprocessing.npz", buf.getvalue())


def load_preprocessing(directory: str | Path) -> Preprocessing:
    """Read the preprocessing written by `save_preprocessing`."""
    import json

    directory = Path(directory)
    spec_path, mean_path = directory / "preprocessing.json", directory / "preprocessing.npz"
    if not (spec_path.exists() and mean_path.exists()):
        raise DataError(f"{directory} holds no fitted preprocessing; run `dvc repro prepare`")
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise _unreadable(spec_path, f"is not readable JSON ({exc})") from None
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("scale"), int | float)
        and isinstance(spec.get("center"), bool)
    ):
        raise _unreadable(spec_path, "lacks a numeric `scale` and a true/false `center`")
    mean = _read_npz(mean_path, ("mean",))["mean"]
    if spec["center"] and mean.shape != (N_X, 1):
        raise _unreadable(mean_path, f"holds a mean of shape {mean.shape}, not ({N_X}, 1)")
    return Preprocessing(scale=float(spec["scale"]), mean=mean if spec["center"] else None)


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, NDArray[Any]]:
    """The arrays `keys` of the .npz file at `path`, or a `DataError` that names the file."""
    # A directory, an empty, truncated or text file (numpy takes text for a pickle) each
    # raise something else; all mean the same to the user.
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one bare array, as an .npy does")
        with loaded as npz:
            missing = [key for key in keys if key not in npz.files]
            if not missing:
                return {key: npz[key] for key in keys}
    except NPZ_ERRORS as exc:
        raise _unreadable(path, f"is not a readable .npz file ({exc})") from None
    raise _unreadable(path, f"lacks the array(s) {', '.join(missing)}")


def _unreadable(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path} {problem}; re-run `dvc repro prepare` (or `itsacat prepare`), which writes it"
    )
