"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
chromedriver, against ``serve --workers 1`` streaming from the simulator.

The test logs in and sees the queued jobs, watches one job's text grow while it streams, cancels
another job from its page (confirming the dialog) and sees the state change without a reload, sees
a third job's row change on the list when it is cancelled elsewhere, and fails on any console
error. Screenshots of the three views at 1280x800 and of the job view at phone width go to
``.ci/artifacts/``.

Nothing is downloaded: the browser and driver paths are given explicitly and Selenium Manager is
told to stay offline (``SE_OFFLINE``). Skipped without chromium unless ``REQUIRE_CHROMIUM=1``
(``.ci/run`` sets it): then it fails. Selenium is blocking, so the test is synchronous and the
simulator runs on an event loop of its own in a thread.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.pool_harness import PREFILL_MODEL, spec
from tests.serve_fixtures import ServeFactory, write_serve_config
from tests.server_harness import TOKEN
from worker.simulator import SimulatorConfig, run_simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60.0


def _need_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{reason}, and REQUIRE_CHROMIUM=1", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """A simulator streaming at a pace a viewer can watch, on its own loop in a thread."""
    found: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        config = SimulatorConfig(tokens_per_second=120, tokens_per_delta=(1, 3))
        async with run_simulator(config) as sim:
            found.put(sim.base_url)
            await anyio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=anyio.run, args=(serve,), daemon=True)
    thread.start()
    try:
        yield found.get(timeout=30)
    finally:
        stop.set()
        thread.join(30)


def _api(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _job(job_id: str, tokens: int, priority: int = 0) -> dict[str, Any]:
    prompt = spec(job_id, tokens=tokens).messages[0].content
    return {"id": job_id, "prompt": prompt, "model": PREFILL_MODEL, "priority": priority}


@pytest.fixture
def browser() -> Iterator[Any]:
    _need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _rows(driver: Any) -> dict[str, str]:
    """The list's rows (job id -> row text), read in one script run: the list may re-render
    between two WebDriver calls."""
    script = (
        "return Array.from(document.querySelectorAll('#job-rows tr[data-job]'))"
        ".map(r => [r.dataset.job, r.innerText]);"
    )
    return dict(driver.execute_script(script))


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))


def test_the_dashboard_in_chromium(
    tmp_path: Path, serve_process: ServeFactory, simulator_url: str, browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # The list re-renders itself as the running job commits: elements found a moment ago go stale.
    stale = (StaleElementReferenceException,)
    driver, wait = browser, WebDriverWait(browser, WAIT, ignored_exceptions=stale)
    served = serve_process(write_serve_config(tmp_path, base_url=simulator_url), "--workers", "1")
    jobs = [_job("live", 3000, priority=10), _job("victim", 200), _job("other", 200), _job("later", 200)]
    _api(f"{served.url}/v1/jobs", "POST", {"jobs": jobs})

    driver.get(f"{served.url}/")
    assert driver.current_url.endswith("/login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(ec.presence_of_element_located((By.ID, "job-rows")))
    rows = _rows(driver)
    assert set(rows) == {"live", "victim", "other", "later"}
    assert "queued" in rows["victim"]
    _shot(driver, "jobs")

    # The list follows a cancel made elsewhere, without a reload.
    driver.execute_script("window.notReloaded = true")
    _api(f"{served.url}/v1/jobs/later/cancel", "POST")
    wait.until(lambda d: "cancelled" in _rows(d).get("later", ""))
    assert driver.execute_script("return window.notReloaded") is True

    # The live document grows while the job streams.
    driver.get(f"{served.url}/jobs/live")

    def doc_length(d: Any) -> int:
        return int(d.execute_script("return document.getElementById('doc').textContent.length"))

    wait.until(lambda d: doc_length(d) > 50)
    first = doc_length(driver)
    wait.until(lambda d: doc_length(d) > first + 200)
    assert _api(f"{served.url}/v1/jobs/live")["state"] == "running"
    _shot(driver, "job")
    driver.set_window_size(390, 844)
    _shot(driver, "job-phone")
    driver.set_window_size(1280, 800)

    # Cancel another job from its page, confirming the dialog; its state changes in place.
    driver.get(f"{served.url}/jobs/victim")
    driver.execute_script("window.notReloaded = true")
    wait.until(lambda d: d.find_element(By.ID, "live-status").text == "Live")

    def click_cancel(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, 'button[data-action="cancel"]').click()
        return True

    wait.until(click_cancel)  # retried if the panel was redrawn under the click
    wait.until(ec.alert_is_present()).accept()
    wait.until(lambda d: d.find_element(By.ID, "job-state").text == "cancelled")
    assert driver.execute_script("return window.notReloaded") is True
    assert _api(f"{served.url}/v1/jobs/victim")["state"] == "cancelled"

    driver.get(f"{served.url}/fleet")
    wait.until(lambda d: "Workers" in d.find_element(By.ID, "fleet").text)
    workers = driver.find_elements(By.CSS_SELECTOR, "#fleet table tbody tr")
    assert workers and workers[0].text.split()[-1] == "1"  # one worker, running "live"
    _shot(driver, "fleet")

    errors = _console_errors(driver)
    assert not errors, errors
