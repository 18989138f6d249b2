"""The web page in headless Chromium: it loads, draws one Pareto point per setting, the gold-sparsity
line, a legend grouped by kind and the summary table, and fetches nothing from outside the service."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import hand_report

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=DriverService(driver_path), options=opts)
    yield driver
    driver.quit()


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_page_draws_pareto_and_attention_offline(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service.url + "/")
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    points = browser.find_elements(By.CSS_SELECTOR, "#pareto circle.point")
    report = hand_report()
    assert len(points) == sum(len(p["settings"]) for p in report["predictors"]) == 5
    assert sorted(p.get_attribute("data-setting") for p in points) == sorted(
        s["spec"] for p in report["predictors"] for s in p["settings"])

    # the gold sparsity (0.9 in the hand report) as a vertical line: x = 50 + 0.9 * (640 - 50 - 15)
    gold = browser.find_element(By.ID, "gold-line")
    assert float(gold.get_attribute("data-sparsity")) == pytest.approx(0.9)
    assert float(gold.get_attribute("x1")) == float(gold.get_attribute("x2")) == pytest.approx(50 + 0.9 * 575)
    assert "gold sparsity 0.900" in browser.find_element(By.ID, "gold-label").text

    # the legend groups predictors by kind, each swatch in its curve's colour
    groups = {g.get_attribute("data-kind"): [e.get_attribute("data-predictor")
                                             for e in g.find_elements(By.CSS_SELECTOR, ".legend-entry")]
              for g in browser.find_elements(By.CSS_SELECTOR, "#report-predictors .kind-group")}
    assert groups == {"fixed": ["window"], "reference": ["oracle"]}
    for spec in ("window", "oracle"):
        swatch = browser.find_element(By.CSS_SELECTOR, f'.legend-entry[data-predictor="{spec}"] line')
        curve = browser.find_element(By.CSS_SELECTOR, f'#pareto polyline.curve[data-predictor="{spec}"]')
        assert swatch.get_attribute("stroke") == curve.get_attribute("stroke")
    strokes = {c.get_attribute("stroke") for c in browser.find_elements(By.CSS_SELECTOR, "#pareto polyline.curve")}
    assert len(strokes) == 2
    # the Pareto front of the non-reference predictors: here window's three settings
    assert len(browser.find_element(By.CSS_SELECTOR, "#pareto polyline.front").get_attribute("points").split()) == 3

    # the summary table under the plot: fixed before reference, numbers of report.summary
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#summary tbody tr")]
    assert rows == [["window", "fixed", "–", "–", "0.4000"], ["oracle", "reference", "0.8500", "0.8000", "0.9000"]]

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "service_page.png"))
    assert (ARTIFACTS / "service_page.png").stat().st_size > 10_000

    # hover shows the setting
    from selenium.webdriver.common.action_chains import ActionChains

    first = browser.find_element(By.CSS_SELECTOR, '#pareto circle[data-setting="window4"]')
    ActionChains(browser).move_to_element(first).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and "window4" in tip.text and "recall 0.5000" in tip.text

    # un-ticking a predictor removes its points; layer 0 / head 0 moves window1's recall to 1.0
    browser.find_element(By.CSS_SELECTOR, '#report-predictors input[value="oracle"]').click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pareto circle.point")) == 3
    browser.find_element(By.CSS_SELECTOR, '#layer option[value="0"]').click()
    browser.find_element(By.CSS_SELECTOR, '#head option[value="0"]').click()
    moved = browser.find_element(By.CSS_SELECTOR, '#pareto circle[data-setting="window1"]')
    assert float(moved.get_attribute("cy")) == pytest.approx(10.0)  # recall 1.0 is the top of the plot

    # one input's predicted vs gold graph
    browser.find_element(By.ID, "attn-predictor").clear()
    browser.find_element(By.ID, "attn-predictor").send_keys("window1")
    browser.find_element(By.CSS_SELECTOR, "#attn-form button").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attn rect"))
    assert "recall" in browser.find_element(By.ID, "attn-stats").text
    cells = browser.find_elements(By.CSS_SELECTOR, "#attn rect")
    assert {c.get_attribute("class") for c in cells} <= {"both", "missed", "extra"}

    own = urlparse(service.url).netloc
    urls = _requested_urls(browser)
    assert any(u.endswith("/static/app.js") for u in urls)
    outside = [u for u in urls if urlparse(u).scheme in ("http", "https") and urlparse(u).netloc != own]
    assert outside == []
