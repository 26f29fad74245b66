"""Screenshots of the web page on the shipped default learngene (bench/results/web/), by hand:

    python -m api_tests.web_screenshots bench/results/web

Starts the embedded service on a scratch home with the shipped learngenes, opens the page in Debian's
headless Chromium, opens the learngene's detail (its pre-training curve and a sample grid per width).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from api_tests.harness import chromium, embedded_service
from fine.spec import default_learngene


def main(out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home, \
            embedded_service(Path(home), default_learngene()) as svc:
        driver = chromium(size="1200,1400")
        try:
            driver.get(svc.base + "/")
            driver.find_element(By.ID, "api-key").send_keys(svc.admin_key())  # log in with the local admin key
            driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#learngene-table tbody tr"))
            driver.find_element(By.CSS_SELECTOR, "#learngene-table tbody tr").click()
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(
                "const i = document.querySelectorAll('img.learngene-picture');"
                "return i.length > 0 && [...i].every((x) => x.complete && x.naturalWidth > 0)"))
            time.sleep(0.5)
            driver.save_screenshot(str(out / "learngene.png"))
        finally:
            driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
