"""The page at GET /, in real headless Chromium (Debian's chromium + chromium-driver,
installed by `make test` through tests/system-deps.sh), driven by Selenium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from itsacat.predict import Predictor
from itsacat.serve.process import ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def page_url(tiny_model_dir: Path) -> Iterator[str]:
    with ServerProcess.start(tiny_model_dir, workers=1) as proc:
        yield proc.url + "/"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and (CHROMEDRIVER.exists() or shutil.which("chromedriver"))):
        pytest.fail("Chromium is missing: run `bash tests/system-deps.sh chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1000,760",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def upload(driver: object, url: str, path: Path) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "file").send_keys(str(path))  # type: ignore[attr-defined]
    WebDriverWait(driver, 30).until(
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
        )
    )
    return str(driver.find_element(By.TAG_NAME, "body").get_attribute("data-state"))  # type: ignore[attr-defined]


def test_upload_a_photo_and_read_the_verdict(
    browser: object, page_url: str, photos: list[Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    predictor = Predictor.load(tiny_model_dir)
    for photo in photos:
        assert upload(browser, page_url, photo) == "done"
        expected = predictor.predict_bytes(photo.read_bytes())
        verdict = browser.find_element(By.ID, "verdict").text  # type: ignore[attr-defined]
        assert verdict == ("cat" if expected.label == "cat" else "not a cat")
        shown = float(browser.find_element(By.ID, "probability").text)  # type: ignore[attr-defined]
        assert shown == pytest.approx(expected.probability, abs=5e-4)
        rule = browser.find_element(By.ID, "rule").text  # type: ignore[attr-defined]
        assert rule == f"· a cat from {expected.threshold:g}"
        tick = browser.find_element(By.ID, "cut")  # type: ignore[attr-defined]
        assert tick.is_displayed()
        meter = tick.find_element(By.XPATH, "..")
        left = float(tick.value_of_css_property("left").removesuffix("px"))  # computed: px
        assert left == pytest.approx(expected.threshold * meter.size["width"], abs=1.0)
        charts = browser.find_elements(By.CSS_SELECTOR, "#layers svg")  # type: ignore[attr-defined]
        assert len(charts) == len(predictor.model.network.W)
        bars = [len(c.find_elements(By.TAG_NAME, "rect")) for c in charts]
        assert bars == predictor.model.network.sizes[1:]
        names = browser.find_elements(By.CSS_SELECTOR, "#layers .name")  # type: ignore[attr-defined]
        assert names[-1].text == (
            f"layer {len(charts)} · sigmoid output · P(cat) {expected.probability:.3f} · "
            f"a cat from {expected.threshold:g} (the line)"
        )
        assert len(charts[-1].find_elements(By.CSS_SELECTOR, "line[stroke-dasharray]")) == 1
        preview = browser.find_element(By.ID, "preview")  # type: ignore[attr-defined]
        assert preview.get_attribute("naturalWidth") not in (None, "0")  # the photo is shown
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000


def test_a_file_that_is_not_a_photo_shows_the_servers_error(
    browser: object, page_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not a photo")
    assert upload(browser, page_url, fake) == "error"
    error = browser.find_element(By.ID, "error").text  # type: ignore[attr-defined]
    assert "not a JPEG, PNG" in error
