"""h5 validation, image decoding, the one preprocessing function, splits, duplicates."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from imaging import encode
from itsacat.data import (
    MAX_PIXELS,
    MAX_PIXELS_FULL_DECODE,
    N_X,
    Dataset,
    Preprocessing,
    decode_image,
    find_duplicates,
    fit_preprocessing,
    load_h5,
    load_preprocessing,
    load_split,
    preprocess,
    save_preprocessing,
    save_split,
    stratified_split,
    training_set,
    with_shifted,
)
from itsacat.errors import DataError, ImageError


def _write_h5(path: Path, split: str = "train", m: int = 4, **override: object) -> Path:
    rng = np.random.default_rng(0)
    content = {
        f"{split}_set_x": rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8),
        f"{split}_set_y": np.array([0, 1] * (m // 2), dtype=np.int64),
        "list_classes": np.array([b"non-cat", b"cat"]),
    }
    content.update(override)
    with h5py.File(path, "w") as f:
        for key, value in content.items():
            if value is not None:
                f[key] = value
    return path


def test_real_files_load_with_expected_shapes(shared_dir: Path) -> None:
    train = load_h5(shared_dir / "datasets/catvnoncat/train_catvnoncat.h5", "train")
    test = load_h5(shared_dir / "datasets/catvnoncat/test_catvnoncat.h5", "test")
    assert train.images.shape == (209, 64, 64, 3) and len(test) == 50
    assert train.classes == ("non-cat", "cat")
    assert train.labels.mean() == pytest.approx(72 / 209)  # 34% cats
    assert test.labels.mean() == pytest.approx(33 / 50)  # 66% cats


def test_real_data_has_a_train_test_duplicate(shared_dir: Path) -> None:
    train = load_h5(shared_dir / "datasets/catvnoncat/train_catvnoncat.h5", "train")
    test = load_h5(shared_dir / "datasets/catvnoncat/test_catvnoncat.h5", "test")
    pairs = find_duplicates(train.images, test.images)
    assert pairs
    for i, j in pairs:
        assert np.array_equal(train.images[i], test.images[j])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"train_set_y": None}, "lacks the key(s) train_set_y"),
        ({"list_classes": None}, "lacks the key(s) list_classes"),
        ({"train_set_x": np.zeros((4, 32, 32, 3), np.uint8)}, "must have shape (m, 64, 64, 3)"),
        ({"train_set_x": np.zeros((4, 64, 64, 3), np.float32)}, "must be uint8 pixels"),
        ({"train_set_y": np.array([0, 1, 2, 1])}, "only 0 (non-cat) and 1 (cat), found [2]"),
        ({"train_set_y": np.array([0, 1, 1])}, "has 3 labels for 4 images"),
        ({"list_classes": np.array([b"a", b"b", b"c"])}, "must name 2 classes"),
    ],
)
def test_bad_h5_files_name_the_file_and_problem(
    tmp_path: Path, override: dict, fragment: str
) -> None:
    path = _write_h5(tmp_path / "bad.h5", **override)
    with pytest.raises(DataError) as err:
        load_h5(path, "train")
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; run `dvc pull`"):
        load_h5(tmp_path / "nope.h5", "train")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load_h5(tmp_path / "text.h5", "train")
    _write_h5(tmp_path / "test.h5", split="test")
    with pytest.raises(DataError, match="expected a train split file"):
        load_h5(tmp_path / "test.h5", "train")


def test_preprocess_layout_scale_and_centring() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    X = preprocess(images, Preprocessing())
    assert X.shape == (N_X, 3) and X.dtype == np.float32 and X.flags.f_contiguous
    # column j is photo j flattened in (row, column, channel) order, scaled to [0, 1]
    assert np.allclose(X[:, 1], images[1].reshape(-1) / 255.0)
    prep = fit_preprocessing(images, center=True)
    Xc = preprocess(images, prep, "float64")
    assert np.allclose(Xc.mean(axis=1), 0.0, atol=1e-6)
    assert fit_preprocessing(images, center=False).mean is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "CMYK", "1"])
def test_decode_any_mode_to_64x64_rgb(mode: str) -> None:
    img = Image.new("RGB", (120, 90), (200, 30, 30)).convert(mode)
    fmt = "JPEG" if mode in ("RGB", "L", "CMYK") else "PNG"
    out = decode_image(encode(img, fmt))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert (decode_image(encode(img, "PNG")) == 255).all()


def test_exif_orientation_is_honoured() -> None:
    # a wide image, left half black, right half white; EXIF 6 = rotate 90° clockwise on display
    img = Image.new("L", (128, 64), 0)
    img.paste(255, (64, 0, 128, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(img.convert("RGB"), "JPEG", exif=exif, quality=95))
    # after the rotation the white half is at the bottom: compare top and bottom rows
    assert out[:8].mean() < 60 and out[-8:].mean() > 200


def test_exif_cut_short_is_read_as_far_as_it_goes_without_a_warning() -> None:
    """A photo whose EXIF block ends early still decodes, as upright, and Pillow's "Corrupt
    EXIF data" warning (once per server process, on stderr) is not passed on."""
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    data = encode(img, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x02\x00")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image(data)
    assert out.shape == (64, 64, 3) and abs(int(out[..., 0].mean()) - 200) < 8


def test_large_photo_decodes(photos: list[Path]) -> None:
    out = decode_image(photos[0].read_bytes())
    assert out.shape == (64, 64, 3) and 10 < out.mean() < 245


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"hello, I am text", "are not a JPEG"),
        (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "not a readable image"),
    ],
)
def test_bad_bytes_are_image_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    img = Image.new("1", (10_000, 10_000))  # 100 megapixels, a few kB as PNG
    data = encode(img, "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="pixels"):
        decode_image(data)


def _claiming_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A small PNG or baseline JPEG whose header claims `width`×`height` pixels."""
    size = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    if fmt == "PNG":  # IHDR: width and height at 16-24, its CRC (over type and data) at 29
        ihdr = data[12:16] + size + data[24:29]
        return data[:16] + size + data[24:29] + zlib.crc32(ihdr).to_bytes(4, "big") + data[33:]
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))  # SOF0 or SOF2 (progressive):
    # length (2), precision (1), height (2), width (2)
    return data[: sof + 5] + size[6:8] + size[2:4] + data[sof + 9 :]


@pytest.mark.parametrize(
    ("fmt", "width", "height", "limit"),
    [
        ("PNG", 20_000, 20_000, MAX_PIXELS_FULL_DECODE),  # Pillow refuses it as a bomb
        ("PNG", 6_000, 6_000, MAX_PIXELS_FULL_DECODE),
        ("JPEG", 20_000, 20_000, MAX_PIXELS),
    ],
)
def test_too_large_images_are_refused_with_their_formats_limit(
    fmt: str, width: int, height: int, limit: int
) -> None:
    data = _claiming_size(encode(Image.new("RGB", (64, 64)), fmt), fmt, width, height)
    with pytest.raises(ImageError) as err:
        decode_image(data)
    other = MAX_PIXELS if limit == MAX_PIXELS_FULL_DECODE else MAX_PIXELS_FULL_DECODE
    assert f"{limit:,}" in str(err.value) and f"{other:,}" not in str(err.value)


def test_progressive_jpegs_have_the_limit_of_images_decoded_whole() -> None:
    """libjpeg keeps a progressive JPEG's coefficients whole (6 bytes a pixel at 4:4:4):
    30 MP is refused as progressive, while the same claim in a baseline JPEG passes the
    size check."""
    small = Image.new("RGB", (64, 64))
    progressive = encode(small, "JPEG", progressive=True)
    assert Image.open(io.BytesIO(progressive)).info.get("progressive")
    with pytest.raises(ImageError) as err:
        decode_image(_claiming_size(progressive, "JPEG", 6_000, 5_000))
    assert "progressive JPEG" in str(err.value) and f"{MAX_PIXELS_FULL_DECODE:,}" in str(err.value)
    try:  # libjpeg may or may not make something of the short stream: either is fine here
        decode_image(_claiming_size(encode(small, "JPEG"), "JPEG", 6_000, 5_000))
    except ImageError as exc:
        assert "allowed" not in str(exc)


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I")])
def test_16_bit_grey_decodes_like_the_8_bit_photo(photos: list[Path], fmt: str, mode: str) -> None:
    grey = Image.open(photos[0]).reduce(2).convert("L")
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # v·257: 255 → 65535
    if mode == "I":
        deep = deep.convert("I")  # TIFF's 32-bit integer grey, holding 16-bit values
    data = encode(deep, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    got = decode_image(data).astype(int)
    assert np.abs(got - decode_image(encode(grey, "PNG"))).max() <= 1


@pytest.mark.parametrize(
    ("mode", "value", "fragment"),
    [("F", 0.5, "32-bit float images"), ("I", 70_000, "32-bit integer images")],
)
def test_32_bit_images_are_refused(mode: str, value: float, fragment: str) -> None:
    data = encode(Image.new(mode, (64, 64), value), "TIFF")
    with pytest.raises(ImageError, match=f"{fragment} are not supported; send an 8-bit or 16-bit"):
        decode_image(data)


def _mpo(img: Image.Image) -> bytes:
    """`img` as a multi-picture JPEG (as many phones write), a thumbnail as second picture."""
    data = encode(img, "MPO", save_all=True, append_images=[img.resize((64, 64))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    return data


def test_phone_mpo_photo_decodes_like_the_same_jpeg(photos: list[Path]) -> None:
    photo = Image.open(photos[0])
    photo.load()
    assert np.array_equal(decode_image(_mpo(photo)), decode_image(encode(photo, "JPEG")))


def test_mpo_photo_has_the_jpeg_pixel_limit() -> None:
    big = Image.linear_gradient("L").resize((6_000, 5_000)).convert("RGB")
    assert MAX_PIXELS_FULL_DECODE < 6_000 * 5_000 <= MAX_PIXELS
    assert np.array_equal(decode_image(_mpo(big)), decode_image(encode(big, "JPEG")))


def test_transparency_flattened_after_the_shrink_is_as_flattened_before(
    photos: list[Path],
) -> None:
    photo = Image.open(photos[0]).reduce(2).convert("RGB")
    clear_edges = Image.radial_gradient("L").resize(photo.size).point(lambda v: 255 - v)
    rgba = photo.copy()
    rgba.putalpha(clear_edges)
    white = Image.new("RGBA", photo.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, rgba).convert("RGB")
    diff = np.abs(decode_image(encode(rgba, "PNG")).astype(int) - decode_image(encode(flat, "PNG")))
    # Pillow shrinks RGBA with alpha premultiplied into 8 bits, which rounds a little
    assert diff.max() <= 3 and diff.mean() < 1


_PEAK_MEMORY = r"""
import re, sys
from pathlib import Path
from itsacat.data import decode_image

def mib(key):
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024

data = sys.stdin.buffer.read()
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
before = mib("VmRSS")
decode_image(data)
print(mib("VmHWM") - before)
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="reads peak memory from Linux's /proc"
)
@pytest.mark.parametrize("mode", ["P", "RGBA"])
def test_transparent_image_costs_about_two_full_size_copies(mode: str) -> None:
    side = 5_000
    if mode == "P":  # a few kB of PNG
        img = Image.new("P", (side, side), 0)
        img.putpalette([0, 0, 0, 200, 30, 30])
        img.paste(1, (1_000, 1_000, 4_000, 4_000))
        data = encode(img, "PNG", transparency=0)
    else:
        img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        img.paste((200, 30, 30, 128), (1_000, 1_000, 4_000, 4_000))
        data = encode(img, "PNG")
    del img
    # a fresh process: this one's freed memory would hide the peak
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY], input=data, capture_output=True, check=True
    )
    rgba_copies = float(out.stdout) * 2**20 / (4 * side * side)
    # the image as RGBA and the premultiplied copy Pillow shrinks; flattening it onto white
    # at full size took two more
    assert rgba_copies < 3


def test_stratified_split_keeps_class_shares_and_is_seeded() -> None:
    labels = np.array([0] * 70 + [1] * 30, dtype=np.uint8)
    tr, va = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert len(va) == 20 and labels[va].sum() == 6
    assert not set(tr) & set(va) and len(tr) + len(va) == 100
    _, va2 = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert np.array_equal(va, va2)
    tr0, va0 = stratified_split(labels, 0.0, np.random.default_rng(0))
    assert len(tr0) == 100 and len(va0) == 0


def test_with_mirrored_appends_left_right_mirrors_with_same_labels() -> None:
    from itsacat.data import Dataset, with_mirrored

    rng = np.random.default_rng(0)
    ds = Dataset(
        rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), np.array([0, 1, 1], np.uint8)
    )
    out = with_mirrored(ds)
    assert len(out) == 6 and list(out.labels) == [0, 1, 1, 0, 1, 1]
    assert np.array_equal(out.images[4][:, 0], ds.images[1][:, -1])  # column 0 ↔ column 63
    assert np.array_equal(out.images[:3], ds.images)


def test_split_and_fit_mirrors_only_training_photos_and_fits_on_them() -> None:
    from itsacat.data import Dataset, split_and_fit

    rng = np.random.default_rng(0)
    ds = Dataset(
        rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8),
        np.array([0] * 14 + [1] * 6, np.uint8),
    )
    train, val, prep = split_and_fit(ds, 0.5, seed=3, center=True, flip=True)
    assert len(val) == 10 and int(val.labels.sum()) == 3
    assert len(train) == 20  # 10 photos and their mirror images
    assert np.allclose(
        prep.mean,
        preprocess(train.images, Preprocessing(), "float64").mean(axis=1, keepdims=True),
        atol=1e-6,
    )
    again = split_and_fit(ds, 0.5, seed=3, center=True, flip=True)[1]
    assert np.array_equal(val.images, again.images)


def test_shifted_copies_move_every_photo_by_the_shift_with_edges_repeated() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ds = Dataset(images, np.array([1, 0, 1], dtype=np.uint8))
    out = with_shifted(ds, 2)
    assert out.images.shape == (15, 64, 64, 3) and out.images.dtype == np.uint8
    assert list(out.labels) == [1, 0, 1] * 5
    assert np.array_equal(out.images[:3], images)  # the originals first, untouched
    down, up, right, left = (out.images[3 * k : 3 * k + 3] for k in range(1, 5))
    # moved by 2: the content lands 2 rows/columns over, the gap repeats the edge
    assert np.array_equal(down[:, 2:], images[:, :-2])
    assert np.array_equal(down[:, 0], images[:, 0])
    assert np.array_equal(up[:, :-2], images[:, 2:])
    assert np.array_equal(up[:, -1], images[:, -1])
    assert np.array_equal(right[:, :, 2:], images[:, :, :-2])
    assert np.array_equal(left[:, :, :-2], images[:, :, 2:])
    assert with_shifted(ds, 0) is ds


def test_training_set_mirrors_then_shifts_and_fits_on_all_of_them() -> None:
    rng = np.random.default_rng(1)
    ds = Dataset(
        rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
        np.array([1, 0, 0, 1], dtype=np.uint8),
    )
    train, prep = training_set(ds, center=True, flip=True, shift=3)
    assert len(train) == 4 * 2 * 5
    assert np.array_equal(train.images[4:8], ds.images[:, :, ::-1])  # mirrored before moved
    assert prep.mean is not None
    np.testing.assert_allclose(
        prep.mean[:, 0], train.images.reshape(len(train), -1).mean(axis=0) / 255.0, rtol=1e-5
    )


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_IMAGES = np.zeros((2, 64, 64, 3), np.uint8)
_SPLIT = _npz(images=_IMAGES, labels=np.array([0, 1], np.uint8), classes=np.array(["a", "b"]))
_NPY = io.BytesIO()
np.save(_NPY, _IMAGES)


def _unknown_compression(npz: bytes) -> bytes:
    """`npz` with every member marked compressed by a method zipfile does not know (99):
    reading one raises NotImplementedError, not any of the errors of a truncated file."""
    data = bytearray(npz)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central
        at = data.find(signature)
        while at != -1:
            data[at + offset : at + offset + 2] = (99).to_bytes(2, "little")
            at = data.find(signature, at + 1)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("train.npz", _SPLIT[: len(_SPLIT) // 2], "is not a readable .npz file"),
        ("train.npz", b"images,labels\n", "is not a readable .npz file"),
        ("train.npz", b"", "is not a readable .npz file"),
        ("train.npz", None, "is not a readable .npz file"),
        ("train.npz", _NPY.getvalue(), "one bare array"),
        ("train.npz", _unknown_compression(_SPLIT), "is not a readable .npz file"),
        (
            "train.npz",
            _npz(images=_IMAGES, classes=np.array(["a", "b"])),
            "lacks the array(s) labels",
        ),
        ("preprocessing.json", b"{", "is not readable JSON"),
        ("preprocessing.json", b'{"scale": 0.004}', "a true/false `center`"),
        ("preprocessing.npz", b"", "is not a readable .npz file"),
        ("preprocessing.npz", _npz(mean=np.zeros((3, 1))), "holds a mean of shape (3, 1)"),
    ],
    ids=[
        "truncated",
        "text",
        "empty",
        "directory",
        "npy",
        "unknown-compression",
        "no-labels",
        "json-brace",
        "json-no-center",
        "mean-empty",
        "mean-shape",
    ],
)
def test_corrupt_prepared_files_name_the_file_and_the_fix(
    tmp_path: Path, name: str, content: bytes | None, fragment: str
) -> None:
    save_split(tmp_path / "train.npz", Dataset(_IMAGES, np.array([0, 1], np.uint8)))
    save_preprocessing(tmp_path, fit_preprocessing(_IMAGES, center=True))
    bad = tmp_path / name
    bad.unlink()
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "train.npz")
        load_preprocessing(tmp_path)
    message = str(err.value)
    assert fragment in message and str(bad) in message and "\n" not in message
    assert message.endswith("re-run `dvc repro prepare` (or `itsacat prepare`), which writes it")
