"""What every dashboard page must be in a real browser: accessible, usable on a phone, on record.

- ``assert_accessible``: axe-core (the copy ``axe-playwright-python`` bundles) finds no serious or
  critical violation of WCAG 2.2 A/AA.
- ``assert_fits_phone``: at the phone viewport nothing scrolls sideways (WCAG 1.4.10 reflow) and every
  visible link, button and form control is at least 24 by 24 CSS px (WCAG 2.5.8 target size; inline links
  in running text are exempt, as the criterion allows).
- ``screenshot``: a full-page PNG under ``CALLREC_ARTIFACTS`` (default ``var/test-artifacts``), kept by
  the test run as its artefacts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from axe_playwright_python.async_playwright import Axe

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MIN_TARGET_PX = 24
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]

ARTIFACTS = Path(os.environ.get("CALLREC_ARTIFACTS", "var/test-artifacts"))

_axe = Axe()


async def assert_accessible(page: Any, name: str) -> None:
    """No serious or critical axe-core violation on the page as it stands."""
    results = await _axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}})
    violations = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    found = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
    ]
    assert not found, f"{name}: " + "; ".join(found)


async def assert_fits_phone(page: Any, name: str) -> None:
    """No sideways scroll; every interactive target at least 24 by 24 px (inline text links exempt)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
    small = await page.evaluate(
        """(min) => [...document.querySelectorAll('a[href], button, input, select, textarea, summary')]
          .filter(e => e.offsetParent !== null && e.type !== 'hidden')
          .filter(e => !(e.tagName === 'A' && e.closest('p, li, dd, td') && !e.classList.contains('target')))
          .map(e => [e, e.getBoundingClientRect()])
          .filter(([e, r]) => r.width < min || r.height < min)
          .map(([e, r]) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} `
                         + `${Math.round(r.width)}x${Math.round(r.height)}`)""",
        MIN_TARGET_PX,
    )
    assert not small, f"{name}: targets under {MIN_TARGET_PX}px: {small}"


async def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page screenshot of the page as a test artefact."""
    path = ARTIFACTS / "screenshots" / f"{re.sub(r'[^a-z0-9_.-]+', '-', name.lower())}.png"
    await page.screenshot(path=str(path), full_page=True)  # Playwright makes the folders
    return path


async def check_page(page: Any, name: str) -> None:
    """The page at desktop and at phone size: accessible at both, fits the phone, screenshots kept."""
    await page.set_viewport_size(DESKTOP)
    await assert_accessible(page, f"{name} (desktop)")
    await screenshot(page, f"{name}-desktop")
    await page.set_viewport_size(PHONE)
    await assert_accessible(page, f"{name} (phone)")
    await assert_fits_phone(page, f"{name} (phone)")
    await screenshot(page, f"{name}-phone")
    await page.set_viewport_size(DESKTOP)
