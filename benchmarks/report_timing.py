"""Time a run's report: writing it (a fresh `tlbench report` process, imports included, and the
library call alone) and opening it in headless Chromium (navigation start to the page's charts
and tables drawn, window.TLBENCH.readyMs); optionally save a screenshot of its top.

    python benchmarks/report_timing.py results/methods_cpu/20261129-212057-cpu --screenshot docs/report.png

Needs Debian's chromium and chromium-driver and selenium (the dev extra); see docs/report.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlbench-report-")) / "report.html"
    cli = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tlbench", "report", str(args.run_dir), "--out", str(out)],
                       check=True, capture_output=True)  # fmt: skip
        cli.append(time.perf_counter() - t)
    from tlbench.report.html import write_report

    write_report([args.run_dir], out)  # imports done: the library call alone
    lib = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        write_report([args.run_dir], out)
        lib.append(time.perf_counter() - t)
    from test_report_browser import open_browser

    opened = []
    for i in range(args.repeat):
        driver = open_browser()  # a fresh browser and profile each time: a cold open
        try:
            if args.screenshot and i == 0:
                driver.set_window_size(1400, 1700)  # the answer, the headline chart and the budgets
            driver.get(out.resolve().as_uri())
            opened.append(driver.execute_script("return window.TLBENCH.readyMs") / 1000)
            if args.screenshot and i == 0:
                driver.save_screenshot(str(args.screenshot))
        finally:
            driver.quit()
    med = statistics.median
    print(f"{args.run_dir}: {out.stat().st_size / 1e6:.2f} MB; `tlbench report` {med(cli):.2f} s "
          f"(process, imports included), write_report {med(lib):.2f} s; opened in {med(opened):.2f} s "
          f"(median of {args.repeat}; each: cli {[round(x, 2) for x in cli]}, lib {[round(x, 2) for x in lib]}, "
          f"open {[round(x, 2) for x in opened]})")  # fmt: skip


if __name__ == "__main__":
    main()
