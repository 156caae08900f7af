"""h5 validation, image decoding, the one preprocessing function, splits, duplicates."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from imaging import encode
from itsacat.data import (
    N_X,
    Dataset,
    Preprocessing,
    decode_image,
    find_duplicates,
    fit_preprocessing,
    load_h5,
    preprocess,
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
