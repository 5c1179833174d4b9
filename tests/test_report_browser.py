"""The report in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven
offline by selenium, on the committed methods run (29 variants). No console error; every chart
drawn with as many marks as its data has points (the headline one: one per variant); a tooltip
on hover naming the variant; a legend click hides a series; the budget inputs change the
recommended set exactly as `tlbench recommend` does; the tables sort. Saves a screenshot.
Skipped, with the reason, where no browser or no selenium is installed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from committed import committed_run

from tlbench.report.html import write_report
from tlbench.report.recommend import Budget, recommend

RUN = committed_run("methods_cpu")
CHROMIUM, DRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1400,1000")  # fmt: skip

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
    pytest.skip(
        "no headless browser: apt-get install -y chromium chromium-driver", allow_module_level=True
    )


def open_browser():
    """Chromium with a fresh profile and nothing that reaches the network (else it waits on it)."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='tlbench-chromium-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    out = write_report([RUN], tmp_path_factory.mktemp("report") / "report.html")
    driver = open_browser()
    try:
        driver.get(out.resolve().as_uri())
        assert driver.execute_script("return window.TLBENCH && window.TLBENCH.ready") is True
        yield driver
    finally:
        driver.quit()


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def test_no_console_errors_and_a_screenshot(page, tmp_path: Path) -> None:
    errors = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    shot = tmp_path / "report.png"
    assert page.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_every_chart_is_drawn_with_its_marks(page) -> None:
    drawn = js(
        page,
        """return TLBENCH.charts.map(c => [c.figure, c.marks,
        c.chart.data.datasets.reduce((n, ds, i) => n + (ds.reference ? 0 : c.chart.getDatasetMeta(i).data
            .filter(p => Number.isFinite(p.x) && Number.isFinite(p.y)).length), 0)])""",
    )
    assert len(drawn) == 16  # 2 + 8 accuracy panels, compute, speed, 2 adaptation, 2 agreement
    assert all(marks > 0 and rendered == marks for _, marks, rendered in drawn), drawn
    variants = recommend(RUN, Budget(max_gflops=1e9))  # independent of the page: 29 variants
    assert drawn[0][0] == "accuracy_vs_gflops" and drawn[0][1] == len(variants) == 29


def test_hovering_a_point_shows_its_variant(page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = js(
        page,
        "const c = TLBENCH.charts[0]; c.canvas.scrollIntoView({block: 'center'}); return c.canvas",
    )
    # the baseline star: its pixel, from the chart's own layout
    x, y, w, h = js(
        page,
        """const c = TLBENCH.charts[0].chart, i = c.data.datasets.findIndex(d => d.label === 'baseline');
        const p = c.getDatasetMeta(i).data[0]; return [p.x, p.y, c.canvas.clientWidth, c.canvas.clientHeight]""",
    )
    ActionChains(page).move_to_element_with_offset(canvas, int(x - w / 2), int(y - h / 2)).perform()
    shown = js(
        page,
        """const t = TLBENCH.charts[0].chart.tooltip;
        return [t.opacity, t.title, t.body ? t.body.flatMap(b => b.lines) : []]""",
    )
    assert shown[0] == 1 and shown[1] == ["baseline"]
    text = "\n".join(shown[2])
    assert "variant baseline" in text and "GFLOPs 0.01945" in text
    assert "speedup 1×" in text and "digits: 1-shot" in text and "mnist:" in text


def test_a_legend_click_hides_a_series(page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = js(
        page,
        "const c = TLBENCH.charts[2]; c.canvas.scrollIntoView({block: 'center'}); return c.canvas",
    )
    x, y, w, h, i = js(
        page,
        """const c = TLBENCH.charts[2].chart, b = c.legend.legendHitBoxes[1];
        return [b.left + b.width / 2, b.top + b.height / 2, c.canvas.clientWidth, c.canvas.clientHeight,
                c.legend.legendItems[1].datasetIndex]""",
    )
    visible = "return TLBENCH.charts[2].chart.data.datasets.map((_, i) => TLBENCH.charts[2].chart.isDatasetVisible(i))"
    assert all(js(page, visible))
    ActionChains(page).move_to_element_with_offset(
        canvas, int(x - w / 2), int(y - h / 2)
    ).click().perform()
    assert [j for j, shown in enumerate(js(page, visible)) if not shown] == [i]


def fits(frame) -> set[str]:
    return {
        f"{m}/{v}"
        for m, v in frame.loc[frame["verdict"] == "fits", ["model", "variant"]].itertuples(
            index=False
        )
    }


def test_budget_inputs_change_the_recommended_set(page) -> None:
    box = page.find_element("css selector", '[data-recommend="0"]')
    before = int(box.find_element("css selector", "[data-fits]").get_attribute("data-fits"))
    field = page.find_element("css selector", '[data-budget="max_accuracy_drop"]')
    field.send_keys("2.2")
    after = int(box.find_element("css selector", "[data-fits]").get_attribute("data-fits"))
    expected = fits(recommend(RUN, Budget(max_accuracy_drop=2.2)))
    assert before == 29 and after == len(expected) < before
    assert set(js(page, "return TLBENCH.judge(0, {max_accuracy_drop: 2.2})")) == expected
    field.clear()
    # the page's rules are recommend's, budget by budget (the speedup on its lower 95% bound)
    for budget in (
        Budget(max_gflops=0.01),
        Budget(min_speedup=1.3),
        Budget(max_gflops=0.012, max_accuracy_drop=5),
    ):
        got = js(
            page,
            "return TLBENCH.judge(0, arguments[0])",
            {k: v for k, v in vars(budget).items() if v is not None},
        )
        assert set(got) == fits(recommend(RUN, budget)), budget


def test_the_variant_table_sorts(page) -> None:
    table = page.find_element("css selector", 'table[data-table="summary"]')
    heads = table.find_elements("css selector", "th")
    col = [h.text for h in heads].index("GFLOPs")
    heads[col].click()

    def column() -> list[float]:
        cells = table.find_elements("css selector", f"tbody tr td:nth-child({col + 1})")
        return [float(c.get_attribute("textContent")) for c in cells]

    up = column()
    assert len(up) == 29 and up == sorted(up)
    heads[col].click()
    assert column() == sorted(up, reverse=True)


def test_an_empty_and_a_compute_only_run_render(page, tmp_path: Path) -> None:
    """Last: it leaves the module's page. Pages that lack most data still draw, without error."""
    from test_report import make_run

    from tlbench import results

    empty = make_run(tmp_path / "a", rows=False)
    results.record_unit(empty, "vit_cpu6", "baseline", "compute", "failed", reason="X: boom")
    for run, charts in ((empty, 0), (make_run(tmp_path / "b"), 1)):
        page.get(write_report([run]).resolve().as_uri())
        assert js(page, "return [TLBENCH.ready, TLBENCH.charts.length]") == [True, charts]
        assert page.find_elements("css selector", "[data-missing]")
        if charts:  # a tooltip of a variant without speed or accuracy says so
            lines = js(
                page,
                """const c = TLBENCH.charts[0].chart, i = c.data.datasets.findIndex(d => !d.reference);
                c.tooltip.setActiveElements([{datasetIndex: i, index: 0}], {x: 0, y: 0}); c.update();
                return c.tooltip.body.flatMap(b => b.lines)""",
            )
            assert "speedup not measured" in lines and "accuracy not measured" in lines
        assert [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
