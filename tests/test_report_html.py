"""The HTML journey report (orchestrator.report_html): built from a hand-made History of 1,200
shoppers through the compiled cart_abandonment journey, parsed for what must be on the page,
and opened in headless Chromium to check the charts are really drawn.

Chromium is required, not optional: without it the browser test fails and says how to install
it (``apt-get install -y chromium chromium-driver``)."""

from __future__ import annotations

import io
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine import CONVERSION_STEP, HOLDOUT_STEP, bucket, pick_variant
from orchestrator.inputs import read_users
from orchestrator.machine import SplitState
from orchestrator.report_charts import funnel_rows
from orchestrator.report_html import render_report
from orchestrator.simulate import default_events
from orchestrator.stats import JourneyStats, journey_stats
from orchestrator.stats.facts import (
    ConversionFact,
    DeliveryFact,
    History,
    MessageFact,
    ReachFact,
    RunFact,
)

from dryrun_helpers import SAMPLE_USERS, START, example, machine, simulate

CART = "cart_abandonment"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAYS = 14
GENERATED = datetime(2026, 3, 20, 8, 30, tzinfo=UTC)
# Conversion probabilities: the journey works (treated beat the holdout), discount beats
# free shipping, but not by enough to tell yet.
P_HOLDOUT, P_EARLY, P_DISCOUNT, P_FREE_SHIPPING = 0.10, 0.06, 0.24, 0.20


def shoppers_history(n: int = 1200, *, seed: int = 5) -> History:
    """``n`` shoppers entering cart_abandonment over two weeks, the way production records
    them: the holdout and the split assigned by the engine's own hash, push/email/SMS nudges
    with provider feedback, quiet-hour deferrals, skips, conversions, a few restarts and
    conversions credited to another journey."""
    m = machine(CART)
    split = m.states["offer"]
    assert isinstance(split, SplitState)
    rnd = random.Random(seed)
    h = History(CART, since=T0, until=T0 + timedelta(days=DAYS + 3))
    for i in range(n):
        uid = f"shopper-{i:04d}"
        rid = f"run-{i:04d}"
        at = T0 + timedelta(minutes=int(i * DAYS * 24 * 60 / n))
        restarts = 1 if i % 97 == 0 else 0
        unfinished = at > T0 + timedelta(days=DAYS - 1) and i % 3 == 0
        if bucket(CART, uid, HOLDOUT_STEP) * 100 < m.holdout:
            converted = rnd.random() < P_HOLDOUT
            if converted:
                h.conversions.append(ConversionFact(rid, uid, CART, "order_completed",
                                                    at + timedelta(hours=rnd.uniform(1, 60))))
            reason = "goal:order_completed" if converted else "holdout_window_ended"
            h.runs.append(RunFact(rid, uid, at, True, (), not unfinished,
                                  None if unfinished else HOLDOUT_STEP,
                                  None if unfinished else reason, converted, restarts))
            continue
        h.reaches += [ReachFact(rid, "wait_an_hour"), ReachFact(rid, "nudge")]
        nudge_at = at + timedelta(hours=1)
        if rnd.random() < 0.2:
            h.messages.append(MessageFact(rid, "nudge", nudge_at, "defer", reason="quiet_hours"))
            nudge_at += timedelta(hours=9)
        roll = rnd.random()
        if roll < 0.08:
            h.messages.append(MessageFact(rid, "nudge", nudge_at, "skip",
                                          reason="no_contact" if roll < 0.05 else "unsubscribed"))
        else:
            channel = "push" if roll < 0.5 else "email" if roll < 0.88 else "sms"
            _send(h, rnd, rid, uid, "nudge", channel, nudge_at)
        if rnd.random() < P_EARLY:  # bought soon after the nudge, before the split
            conv_at = nudge_at + timedelta(hours=rnd.uniform(0.5, 20))
            _convert(h, rnd, rid, uid, conv_at)
            h.runs.append(RunFact(rid, uid, at, False, (), True, "wait_for_order",
                                  "goal:order_completed", True, restarts))
            continue
        if rnd.random() < 0.03:  # emptied the cart
            h.runs.append(RunFact(rid, uid, at, False, (), True, "wait_for_order",
                                  "exit:cart_updated", False, restarts))
            continue
        h.reaches.append(ReachFact(rid, "wait_for_order"))
        variant = pick_variant(CART, uid, "offer", split)[0]
        step = "discount_email" if variant == "discount" else "free_shipping_sms"
        h.reaches.append(ReachFact(rid, step))
        offer_at = at + timedelta(hours=24)
        if step == "free_shipping_sms" and rnd.random() < 0.3:
            h.messages.append(MessageFact(rid, step, offer_at, "skip", "sms", variant,
                                          "no_consent"))
        else:
            _send(h, rnd, rid, uid, step, "email" if variant == "discount" else "sms", offer_at,
                  variant)
        p = P_DISCOUNT if variant == "discount" else P_FREE_SHIPPING
        converted = rnd.random() < p
        if converted:
            _convert(h, rnd, rid, uid, offer_at + timedelta(hours=rnd.uniform(0.2, 40)))
        h.runs.append(RunFact(
            rid, uid, at, False, (("offer", variant),), not unfinished,
            None if unfinished else CONVERSION_STEP,
            None if unfinished else ("goal:order_completed" if converted else "completed"),
            converted, restarts))
    return h


def _send(h: History, rnd: random.Random, rid: str, uid: str, step: str, channel: str,
          at: datetime, variant: str | None = None) -> None:
    h.messages.append(MessageFact(rid, step, at, "send", channel, variant))
    roll = rnd.random()
    status = "delivered" if roll < 0.9 else "bounced" if roll < 0.95 else "failed"
    ok = status == "delivered" and channel != "sms"
    opened = ok and rnd.random() < 0.45
    h.deliveries.append(DeliveryFact(rid, uid, CART, step, channel, at, status, opened,
                                     opened and rnd.random() < 0.3))


def _convert(h: History, rnd: random.Random, rid: str, uid: str, at: datetime) -> None:
    if rnd.random() < 0.05:  # another journey's email came last
        h.deliveries.append(DeliveryFact(f"o-{rid}", uid, "onboarding", "welcome", "email",
                                         at - timedelta(minutes=30), "delivered"))
    h.conversions.append(ConversionFact(rid, uid, CART, "order_completed", at))


@pytest.fixture(scope="module")
def stats() -> JourneyStats:
    return journey_stats(machine(CART), shoppers_history())


@pytest.fixture(scope="module")
def page(stats: JourneyStats) -> str:
    return render_report(stats, generated_at=GENERATED)


# -- the HTML, parsed --------------------------------------------------------------------------

class Page(HTMLParser):
    """Figures (data-chart -> number of <svg> inside, caption), attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: dict[str, dict[str, Any]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._figure: str | None = None
        self._in_caption = False
        self._in_script_or_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure" and "chart" in (a.get("class") or ""):
            self._figure = a["data-chart"] or ""
            self.figures[self._figure] = {"svg": 0, "title": 0, "caption": "", "label": None}
        elif self._figure and tag == "svg":
            self.figures[self._figure]["svg"] += 1
            self.figures[self._figure]["label"] = a.get("aria-label")
        elif self._figure and tag == "title":
            self.figures[self._figure]["title"] += 1
        elif tag == "figcaption":
            self._in_caption = True
        self._in_script_or_style = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "figcaption":
            self._in_caption = False
        self._in_script_or_style = False

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._figure:
            self.figures[self._figure]["caption"] += data
        if not self._in_script_or_style:
            self.text.append(data)

    @property
    def plain(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text))


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    return p


def expected_charts(stats: JourneyStats) -> list[str]:
    return ["funnel", "daily"] + [f"experiment-{e.step or 'holdout'}" for e in stats.experiments]


def test_the_data_tells_a_story(stats: JourneyStats) -> None:
    """The history is what the other tests assume: enough users for verdicts, a holdout that
    converts less, two variants."""
    assert stats.funnel.users == 1200 and 100 <= stats.funnel.held_out <= 140
    holdout, offer = stats.experiments
    assert (holdout.kind, offer.kind, offer.step) == ("holdout", "split", "offer")
    assert [g.name for g in offer.groups] == ["discount", "free_shipping", "holdout"]
    assert holdout.comparisons[0].significant  # treated convert better than the holdout
    assert not stats.history.simulated and stats.funnel.steps[1].delivered


def test_every_chart_is_an_inline_svg_with_a_title_and_caption(stats: JourneyStats,
                                                               page: str) -> None:
    p = parse(page)
    assert list(p.figures) == expected_charts(stats) == [
        "funnel", "daily", "experiment-holdout", "experiment-offer"]
    for key, fig in p.figures.items():
        assert fig["svg"] == 1, key
        assert fig["title"] == 1 and fig["label"], key
        assert fig["caption"].strip(), key
    assert page.startswith("<!DOCTYPE html>")
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    # several SVGs in one page: no id may repeat
    ids = [a["id"] for _, a in p.tags if a.get("id")]
    assert len(ids) == len(set(ids)) and len(ids) > 100


def test_the_page_loads_nothing_from_anywhere(page: str) -> None:
    p = parse(page)
    for tag, attrs in p.tags:
        assert tag not in ("script", "link", "iframe", "img", "object", "embed"), tag
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:", "data:")), (tag, name)
            if name in ("href", "xlink:href") and value:
                assert value.startswith("#"), (tag, value)
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # CSS and SVG only point inside
    assert "@import" not in page
    # the only absolute URLs left are XML namespace names, which are never fetched
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls


def test_header_says_what_the_data_is(stats: JourneyStats, page: str) -> None:
    text = parse(page).plain
    assert f"Journey report: {CART}" in text
    assert stats.version in text
    assert "2026-03-02 09:00 UTC → 2026-03-19 09:00 UTC" in text
    assert "Generated 2026-03-20 08:30 UTC" in text
    assert "Production" in text and "Simulated (dry-run)" not in text


def test_verdicts_and_headlines_are_shown_and_styled_by_outcome(stats: JourneyStats,
                                                                page: str) -> None:
    text = parse(page).plain
    for e in stats.experiments:
        assert e.headline() in text
        for v in e.comparisons:
            assert v.verdict in text
    # significant results and the rest look different
    assert 'class="verdict better' in page
    assert re.search(r'class="verdict (unclear|waiting)', page)
    # rates are percentages, and the tables carry the statistics
    treated = stats.experiments[0].groups[0]
    assert f"{treated.rate * 100:.1f}%" in text
    for heading in ("Difference (95% CI)", "Lift", "p-value", "Probability to beat",
                    "Sent (by channel)", "Skipped (by reason)", "Conversions credited",
                    "Exit reason", "Credited to"):
        assert heading in text, heading
    assert "journey onboarding" in text  # conversions credited to another journey


def test_not_enough_data_is_visibly_different() -> None:
    """With 30 users nothing is significant: every verdict says so, in the waiting style."""
    small = journey_stats(machine(CART), shoppers_history(30))
    page = render_report(small, generated_at=GENERATED)
    assert 'class="verdict waiting' in page and 'class="verdict better' not in page
    verdicts = re.findall(r'class="verdict ([a-z]+)', page)
    assert set(verdicts) == {"waiting"}
    assert "Not enough data yet" in page


def test_user_input_is_escaped() -> None:
    """The journey name, step and variant names and verdicts are escaped everywhere, the SVG
    included (its title and aria-label), and a ``$`` in a name is not read as mathtext."""
    evil = "<script>alert(1)</script>&\"cart\""
    variant = "<img src=x onerror=alert(2)>$x$"
    bad = journey_stats(machine(CART), shoppers_history(40))
    bad.journey = bad.history.journey = bad.funnel.journey = evil
    bad.funnel.steps[1].step = "<b>nudge</b>"
    offer = bad.experiments[1]
    offer.groups = [replace(g, name=variant) if g.name == "discount" else g for g in offer.groups]
    offer.comparisons = [replace(v, group=variant, verdict=v.verdict.replace("discount", variant))
                         if v.group == "discount" else v for v in offer.comparisons]
    page = render_report(bad, generated_at=GENERATED)
    p = parse(page)
    assert not any(tag in ("script", "img", "b") for tag, _ in p.tags)
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert p.plain.count(evil) >= 3  # <title>, heading, footer read back as typed
    assert p.figures["funnel"]["label"] == f"Funnel of journey {evil}"  # aria-label, unescaped
    assert "<b>nudge</b>" in p.plain and variant in p.plain


def test_a_journey_nobody_entered_yet_renders_no_data_charts() -> None:
    empty = journey_stats(machine(CART), History(CART))
    page = render_report(empty, generated_at=GENERATED)
    p = parse(page)
    assert list(p.figures) == ["funnel", "daily", "experiment-holdout", "experiment-offer"]
    assert all(f["svg"] == 1 for f in p.figures.values())
    assert page.count('class="chart empty"') == 4
    assert "No run has ended yet" in p.plain and "No messages sent yet" in p.plain


def test_a_dry_run_report_says_it_is_simulated_and_has_no_feedback() -> None:
    users = read_users(SAMPLE_USERS)
    result = simulate(CART, users, default_events(machine(CART), users, START,
                                                  example("cart_updated")))
    page = render_report(result.stats(), generated_at=GENERATED)
    text = parse(page).plain
    assert "Simulated (dry-run)" in text and "dry-run" in text
    assert "no data" in text  # delivered / opened / clicked, not 0
    rows = funnel_rows(result.stats().funnel)
    assert [r.label for r in rows if r.value is None] == [
        "nudge: delivered, opened, clicked", "discount_email: delivered, opened, clicked",
        "free_shipping_sms: delivered, opened, clicked"]


def test_same_stats_same_page(stats: JourneyStats, page: str) -> None:
    assert render_report(stats, generated_at=GENERATED) == page


# -- in a real browser -------------------------------------------------------------------------

INSTALL = ("headless Chromium is needed for the report's browser test; install it with "
           "`apt-get install -y chromium chromium-driver` (Debian/Ubuntu)")

MEASURE = """
const out = [];
for (const fig of document.querySelectorAll('figure.chart')) {
  const key = fig.dataset.chart;
  const svg = fig.querySelector(':scope > svg');
  const box = svg.getBoundingClientRect();
  const count = (prefix) => fig.querySelectorAll('svg g[id^="' + key + '-' + prefix + '"]').length;
  const widths = [...fig.querySelectorAll('svg g[id^="' + key + '-bar-"]')]
      .map(g => g.getBoundingClientRect().width);
  out.push({
    key: key, width: box.width, height: box.height, title: svg.querySelector('title').textContent,
    bars: count('bar-'), ci: count('ci-'), nodata: count('nodata'),
    entries: count('entries-'), conversions: count('conversions-'), rates: count('rate-'),
    ci_paths: [...fig.querySelectorAll('svg g[id^="' + key + '-ci-"]')]
        .map(g => g.querySelectorAll('path, use').length),
    bar_widths: widths,
  });
}
return out;
"""


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """Debian's chromium through its chromedriver, both found on PATH: with the driver's path
    given, Selenium Manager (which would download a browser) never runs. Missing: the calling
    test fails (never skips) and says how to install them."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail(f"{INSTALL} (found chromium: {chromium}, chromedriver: {chromedriver})",
                    pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _colours(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not white) of a PNG screenshot."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    white = sum(n for n, c in colours if min(c) >= 250)
    return len(colours), 1 - white / (img.width * img.height)


def test_charts_render_in_headless_chromium(stats: JourneyStats, page: str,
                                            tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    with headless_chromium() as browser:
        browser.get(report.as_uri())
        check_charts(browser, stats, tmp_path)


def check_charts(browser: Any, stats: JourneyStats, tmp_path: Path) -> None:
    assert browser.title == f"Journey report: {CART}"
    found = {m["key"]: m for m in browser.execute_script(MEASURE)}
    assert list(found) == expected_charts(stats)
    for key, m in found.items():
        assert m["width"] > 300 and m["height"] > 100, (key, m)
        assert m["title"], key

    funnel = found["funnel"]
    rows = funnel_rows(stats.funnel)
    # entered, held out; wait_an_hour; nudge x6; wait_for_order; offer + 2 variants;
    # discount_email x6; free_shipping_sms x6; converted
    assert len(rows) == 26 and funnel["bars"] == 26 and funnel["nodata"] == 0
    assert max(funnel["bar_widths"]) == funnel["bar_widths"][0] > 100  # entered is the longest

    days = len(stats.daily)
    assert days >= DAYS
    daily = found["daily"]
    assert daily["entries"] == 2 * days and daily["conversions"] == 2 * days  # treated, holdout
    assert daily["rates"] == 2

    for key, groups in (("experiment-holdout", 2), ("experiment-offer", 3)):
        m = found[key]
        assert m["bars"] == groups and m["ci"] == groups, (key, m)
        assert all(n >= 1 for n in m["ci_paths"]), (key, m)  # each error bar has its line
        assert all(w > 5 for w in m["bar_widths"]), (key, m)

    # the holdout bar is drawn differently (grey, hatched) from the treated one
    fills = browser.execute_script("""
        const f = document.querySelector('figure[data-chart="experiment-holdout"]');
        return [0, 1].map(i => f.querySelector('g[id="experiment-holdout-bar-' + i + '"] path')
                               .getAttribute('style'));""")
    assert fills[0] != fills[1] and "url(#" in fills[1]  # the hatch pattern

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    colours, inked = _colours(shot.read_bytes())
    assert colours > 200 and inked > 0.05, (colours, inked)
    for fig in browser.find_elements("css selector", "figure.chart"):
        colours, inked = _colours(fig.screenshot_as_png)
        assert colours > 50 and inked > 0.03, (fig.get_attribute("data-chart"), colours, inked)
