"""model.tar.gz for SageMaker's sklearn container: built, unpacked, and its inference.py
called the way the container calls it, in a clean interpreter with only code/ on the path."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pytest

from itsacat.cli import main as cli_main
from itsacat.predict import Predictor
from itsacat.serve.package import build_model_tarball
from itsacat.serve.sagemaker import Failure, input_fn, output_fn, predict_fn

PIXELS = np.random.default_rng(9).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)

# Runs inside the unpacked archive like the container: model_fn once, then per request
# input_fn → predict_fn → output_fn. JSON bodies arrive as str, binary ones as bytes.
CONTAINER = """
import base64, json, sys
code_dir, site, model_dir, cases_path = sys.argv[1:5]
sys.path.insert(0, code_dir)
sys.path.append(site)  # numpy and Pillow, as the container has them; no .pth, so no src/
import inference, itsacat
model = inference.model_fn(model_dir)
answers = []
for case in json.load(open(cases_path)):
    body = base64.b64decode(case["body"])
    if case["ctype"].startswith("application/json"):
        body = body.decode()
    data = inference.input_fn(body, case["ctype"])
    prediction = inference.predict_fn(data, model)
    out_body, out_type = inference.output_fn(prediction, case["accept"])
    answers.append({"body": json.loads(out_body), "type": out_type})
print(json.dumps({"itsacat": list(itsacat.__path__), "answers": answers}))
"""


@pytest.fixture(scope="module")
def tarball(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_tarball(tiny_model_dir, tmp_path_factory.mktemp("sm") / "model.tar.gz")


def test_tarball_layout_and_reproducible_bytes(
    tarball: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        members = tar.getmembers()
    model_files = sorted(p.name for p in tiny_model_dir.iterdir())
    assert sorted(n for n in names if "/" not in n) == model_files
    assert {
        "code/inference.py",
        "code/requirements.txt",
        "code/itsacat/predict.py",
        "code/itsacat/serve/sagemaker.py",
    } <= set(names)
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
    again = build_model_tarball(tiny_model_dir, tmp_path / "again.tar.gz")
    assert (
        hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(tarball.read_bytes()).digest()
    )


def test_container_calls_the_four_functions(
    tarball: Path, tmp_path: Path, photos: list[Path], tiny_model_dir: Path
) -> None:
    opt_ml_model = tmp_path / "opt-ml-model"
    with tarfile.open(tarball) as tar:
        tar.extractall(opt_ml_model, filter="data")
    buf = io.BytesIO()
    np.save(buf, np.stack([PIXELS, PIXELS[::-1]]))
    photo = photos[0].read_bytes()
    cases = [
        (photo, "image/jpeg", "application/json"),
        (photo, "application/x-image", "*/*"),
        (json.dumps(PIXELS.tolist()).encode(), "application/json", "application/json"),
        (buf.getvalue(), "application/x-npy", "application/json"),
        (b"definitely not a photo", "image/png", "application/json"),
        (photo, "image/jpeg", "text/csv"),
        (b"a,b\n1,2", "text/csv", "application/json"),
    ]
    (tmp_path / "cases.json").write_text(
        json.dumps(
            [{"body": base64.b64encode(b).decode(), "ctype": c, "accept": a} for b, c, a in cases]
        )
    )
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            CONTAINER,
            str(opt_ml_model / "code"),
            site,
            str(opt_ml_model),
            str(tmp_path / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert all(p.startswith(str(opt_ml_model / "code")) for p in reply["itsacat"])
    answers = [a["body"] for a in reply["answers"]]
    assert all(a["type"] == "application/json" for a in reply["answers"])

    predictor = Predictor.load(tiny_model_dir)
    assert answers[0] == answers[1] == predictor.predict_bytes(photo).to_json()
    assert answers[2] == predictor.predict_images(PIXELS[None])[0].to_json()
    assert answers[3]["predictions"][1] == predictor.predict_images(PIXELS[None, ::-1])[0].to_json()
    assert answers[4]["status"] == 400 and "not a JPEG, PNG" in answers[4]["error"]
    assert answers[5]["status"] == 406
    assert answers[6]["status"] == 415


def test_input_fn_never_raises_for_a_bad_body() -> None:
    failure = input_fn(b"", "image/jpeg")
    assert isinstance(failure, Failure) and failure.status == 400
    assert predict_fn(failure, None) is failure  # type: ignore[arg-type]
    body, ctype = output_fn(failure, "application/json")
    assert ctype == "application/json"
    assert json.loads(body) == {"error": failure.message, "status": 400}


def package(model_dir: Path, out: Path) -> int:
    return cli_main(
        ["package", "--kind", "sagemaker", "--model-dir", str(model_dir), "--out", str(out)]
    )


def test_package_under_a_file_says_the_file_is_not_a_folder(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("a file, not a folder\n")
    assert package(tiny_model_dir, readme / "x.tar.gz") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("itsacat: error: "), err
    assert f"cannot write {readme / 'x.tar.gz'}: {readme} is a file, not a folder" in err
    assert "File exists" not in err
    assert readme.read_text() == "a file, not a folder\n"


def test_package_into_a_folder_that_takes_no_files_names_the_out_path(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no file can be created")
    assert package(tiny_model_dir, Path("/proc/x.tar.gz")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("itsacat: error: "), err
    assert "cannot write /proc/x.tar.gz: cannot create a file in /proc (" in err, err
    assert ".tmp" not in err and "cannot read" not in err, err


def test_package_out_naming_a_folder_asks_for_a_file(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert package(tiny_model_dir, tmp_path) == 1
    err = capsys.readouterr().err
    assert err == f"itsacat: error: --out {tmp_path} is a folder; name the archive file to write\n"
    assert [p.name for p in tmp_path.iterdir()] == [], "a temporary file was left behind"


def test_package_never_replaces_a_device_or_pipe(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert package(tiny_model_dir, fifo) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"itsacat: error: --out {fifo} is not a regular file; name the archive file to write\n"
    )
    assert fifo.is_fifo(), "the pipe was replaced by the archive"
