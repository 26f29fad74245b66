"""The web page at GET / in a real browser (Debian's headless Chromium + chromedriver, via selenium):
load the registry, a bad spec shows the API's message beside its field, a small job submitted through
the form reaches `succeeded` live, and its loss curve and samples appear.

Screenshots go to $FINE_SCREENSHOTS when set (bench/results/web/ holds the committed ones)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_tests.conftest import TINY
from api_tests.harness import CHROMEDRIVER, CHROMIUM, Service, chromium

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(make setup installs them)")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator:  # type: ignore[type-arg]
    driver = chromium(downloads)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = Path(os.environ.get("FINE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out / f"{name}.png"))


def test_the_page_browses_submits_watches_and_shows_pictures(service: Service, browser, downloads: Path,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(service.base + "/")
    # Log in as a user does: the key goes into the page's key box (kept in localStorage, sent as Bearer).
    browser.find_element(By.ID, "api-key").send_keys(service.admin_key())
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    learngene = service.client.get("/v1/learngenes").json()[0]
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#learngene-table tr[data-id='{learngene['id']}']")))
    row = browser.find_element(By.CSS_SELECTOR, f"#learngene-table tr[data-id='{learngene['id']}']").text
    assert "digits" in row and str(learngene["hidden_size"]) in row
    wait.until(ec.presence_of_element_located((By.ID, "in-sigma_steps")))

    def fill(values: dict) -> None:  # type: ignore[type-arg]
        for name, value in values.items():
            field = browser.find_element(By.ID, f"in-{name}")
            if field.tag_name == "select":
                browser.execute_script("arguments[0].value = arguments[1]", field, str(value))
            else:
                field.clear()
                field.send_keys(str(value))

    job = {**TINY, "hidden_size": 96, "sigma_steps": 30, "seed": 202}
    fill(job)
    browser.find_element(By.ID, "job-submit").click()
    wait.until(lambda d: d.find_element(By.ID, "error-hidden_size").text)
    message = browser.find_element(By.ID, "error-hidden_size").text
    api = service.client.post("/v1/jobs", json=job).json()
    assert "at most 64" in message and message in api["detail"]  # the API's own words, beside the field
    _shot(browser, "bad-spec", tmp_path)

    fill({"hidden_size": 32})
    browser.find_element(By.ID, "job-submit").click()
    WebDriverWait(browser, 180).until(lambda d: "end: succeeded" in d.find_element(By.ID, "watch-log").text)
    log = browser.find_element(By.ID, "watch-log").text
    assert browser.find_element(By.ID, "watch-status").text == "succeeded"
    # the checkpoint first (downloadable), its evaluation after, then the end of the stream
    assert log.index("running") < log.index("succeeded") < log.index("metrics running") < log.index("metrics ready")
    assert browser.find_element(By.ID, "watch-progress").text.startswith(("sigma 30/30", "eval", "saving"))
    wait.until(lambda d: d.find_element(By.ID, "ckpt-metrics-status").text == "metrics ready")
    for img in ("ckpt-curve", "ckpt-samples"):
        wait.until(lambda d, img=img: d.execute_script(
            "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0", img))
    ckpt_id = browser.find_element(By.ID, "ckpt-id").text
    watched = browser.find_element(By.ID, "watch-id").text
    wait.until(lambda d: "succeeded" in d.find_element(By.CSS_SELECTOR, f"#job-table tr[data-id='{watched}']").text)
    assert ckpt_id.startswith("ckpt_")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#ckpt-table tr[data-id='{ckpt_id}']")))
    button = next(b for b in browser.find_elements(By.CSS_SELECTOR, "#ckpt-files button") if b.text.startswith("dense"))
    button.click()
    WebDriverWait(browser, 30).until(lambda d: (downloads / "model.safetensors").exists())
    dense = service.client.get(f"/v1/checkpoints/{ckpt_id}/file")
    assert (downloads / "model.safetensors").read_bytes() == dense.content  # the page's download is the file
    browser.execute_script("document.getElementById('watch').scrollIntoView()")
    _shot(browser, "job", tmp_path)
    browser.execute_script("window.scrollTo(0, 0)")
    _shot(browser, "registry", tmp_path)
