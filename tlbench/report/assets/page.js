// tlbench report: builds the page from the JSON in #tlbench-data with Chart.js (inlined above).
// No network: everything the page shows is in that JSON. window.TLBENCH exposes the charts and
// the budget function to the browser test (tests/test_report_browser.py).
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("tlbench-data").textContent);
  const app = document.getElementById("app");
  const T = (window.TLBENCH = { charts: [], runs: DATA.runs, judge: null, ready: false });

  // ---- small helpers ------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "html") e.innerHTML = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  function fmt(x, digits) {
    if (x === null || x === undefined) return "";
    if (typeof x === "number") {
      if (Number.isInteger(x)) return String(x);
      return Number(x.toPrecision(digits || 4)).toString();
    }
    return String(x);
  }
  const pct = (x) => (x == null ? "—" : x.toFixed(1) + "%");
  function posLabel(p) {
    if (p == null) return "—";
    for (let d = 1; d <= 24; d++) {
      const n = Math.round(p * d);
      if (Math.abs(n / d - p) < 1e-9) return d === 1 ? String(n) : n + "/" + d;
    }
    return fmt(p, 3);
  }

  // ---- tables: sortable by a header click, filtered by a text box ------------------------------
  function table(columns, rows, opts) {
    opts = opts || {};
    const wrap = el("div", { class: "tablebox" });
    const input = el("input", { class: "filter", type: "search", placeholder: "filter rows (any column)…" });
    const count = el("span", { class: "muted" });
    const head = el("tr");
    const body = el("tbody");
    const t = el("table", opts.id ? { "data-table": opts.id } : {}, el("thead", {}, head), body);
    let order = rows.map((_, i) => i), key = null, dir = 1;
    const numeric = columns.map((_, j) => rows.every((r) => r[j] == null || typeof r[j] === "number"));
    columns.forEach((c, j) => {
      const th = el("th", { text: c, title: "sort by " + c });
      th.addEventListener("click", () => {
        dir = key === j ? -dir : 1;
        key = j;
        head.querySelectorAll("th").forEach((h) => h.removeAttribute("data-dir"));
        th.setAttribute("data-dir", dir > 0 ? "asc" : "desc");
        order.sort((a, b) => cmp(rows[a][j], rows[b][j]) * dir || a - b);
        draw();
      });
      head.append(th);
    });
    function cmp(a, b) {
      if (a == null && b == null) return 0;
      if (a == null) return 1;
      if (b == null) return -1;
      return typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b), undefined, { numeric: true });
    }
    function draw() {
      const q = input.value.trim().toLowerCase();
      const shown = order.filter((i) => !q || rows[i].some((c) => c != null && String(c).toLowerCase().includes(q)));
      body.innerHTML = shown
        .map((i) => {
          const cls = opts.rowClass ? opts.rowClass(i) : "";
          return `<tr class="${cls}">` + rows[i].map((c, j) => `<td${numeric[j] ? ' class="num"' : ""}>${esc(fmt(c))}</td>`).join("") + "</tr>";
        })
        .join("");
      count.textContent = ` ${shown.length} of ${rows.length} rows`;
    }
    input.addEventListener("input", draw);
    draw();
    wrap.append(input, count, el("div", { class: "tablewrap" }, t));
    return wrap;
  }

  // ---- charts ------------------------------------------------------------------------------------
  const errorBars = {
    id: "errorBars",
    afterDatasetsDraw(chart) {
      const ctx = chart.ctx, y = chart.scales.y;
      chart.data.datasets.forEach((ds, i) => {
        const meta = chart.getDatasetMeta(i);
        if (meta.hidden || ds.reference) return;
        ctx.save();
        ctx.strokeStyle = ds.borderColor;
        ctx.lineWidth = 1;
        meta.data.forEach((pt, j) => {
          const r = ds.data[j];
          if (r.lo == null || r.hi == null || r.hi <= r.lo) return;
          const a = y.getPixelForValue(r.lo), b = y.getPixelForValue(r.hi);
          ctx.beginPath();
          ctx.moveTo(pt.x, a); ctx.lineTo(pt.x, b);
          ctx.moveTo(pt.x - 3, a); ctx.lineTo(pt.x + 3, a);
          ctx.moveTo(pt.x - 3, b); ctx.lineTo(pt.x + 3, b);
          ctx.stroke();
        });
        ctx.restore();
      });
    },
  };

  function tooltipLines(run, key, raw) {
    const v = run.variants[key];
    if (!v) return [`(${fmt(raw.x)}, ${fmt(raw.y)})`];
    const lines = [
      `variant ${v.variant}` + (run.models.length > 1 ? ` (${v.model})` : ""),
      `method ${v.method_label}, p = ${posLabel(v.position)}, block ${v.block == null ? "—" : v.block}, S = ${v.tokens == null ? "—" : v.tokens}`,
      `GFLOPs ${v.gflops == null ? "not measured" : fmt(v.gflops)}`,
    ];
    if (v.speedup != null) {
      const ci = v.speedup_low != null ? ` [${fmt(v.speedup_low, 3)}–${fmt(v.speedup_high, 3)}]` : "";
      const rel = v.reliable == null ? "" : v.reliable ? ", reliable" : ", UNRELIABLE";
      lines.push(`speedup ${fmt(v.speedup, 3)}×${ci}${rel}`);
    } else lines.push("speedup not measured");
    const byDs = {};
    for (const [ds, k, a] of v.every_acc) (byDs[ds] = byDs[ds] || []).push(`${k}-shot ${a.toFixed(1)}`);
    for (const [ds, cells] of Object.entries(byDs)) lines.push(`${ds}: ${cells.join(", ")} %`);
    if (!v.every_acc.length) lines.push("accuracy not measured");
    return lines;
  }

  function chartBox(run, spec, headline) {
    const canvas = el("canvas");
    const box = el("div", { class: "chart" + (headline ? " headline" : "") }, el("div", { class: "box" }, canvas),
      el("p", { class: "hint", text: "Hover a point for its variant; click a legend entry to hide or show it." }));
    const datasets = spec.series.map((s) => ({
      label: s.label,
      data: s.points.filter((p) => p[0] != null && p[1] != null).map((p) => ({ x: p[0], y: p[1], lo: p[2], hi: p[3], key: p[4] })),
      showLine: s.line, stepped: s.stepped ? "after" : false, reference: s.reference,
      borderColor: s.color, backgroundColor: s.hollow ? "#ffffff" : s.color, pointBorderColor: s.color,
      pointStyle: s.shape, pointRadius: s.reference ? 0 : s.shape === "star" ? 9 : 4.5, pointHoverRadius: s.reference ? 0 : 7,
      pointHitRadius: s.reference ? 0 : 5, borderDash: s.dash ? [6, 4] : [], borderWidth: s.reference ? 1.2 : 1.6,
      order: s.reference ? 2 : 1,
    }));
    // error bars reach past the points: the value axis must hold them (Chart.js scales to points)
    const ends = spec.series.filter((s) => !s.reference).flatMap((s) => s.points.flatMap((p) => [p[2], p[3]])).filter((v) => v != null);
    const axis = (a, isY) => {
      const o = { type: a.log ? "logarithmic" : "linear", title: { display: true, text: a.label } };
      if (!a.log) o.grace = "4%";
      if (isY && ends.length && a.min == null && !a.log) { o.suggestedMin = Math.min(...ends); o.suggestedMax = Math.max(...ends); }
      if (a.min != null) o.min = a.min;
      if (a.max != null) o.max = a.max;
      if (a.zero) o.beginAtZero = true;
      if (a.positions) {
        o.min = -0.05; o.max = 1.05;
        o.afterBuildTicks = (sc) => { sc.ticks = [0, 0.25, 0.5, 0.75, 1].map((value) => ({ value })); };
        o.ticks = { callback: (val) => posLabel(val) };
      } else if (a.log) {
        o.ticks = { callback: (val) => fmt(val, 3) };
      }
      return o;
    };
    const chart = new Chart(canvas, {
      type: "scatter",
      data: { datasets },
      plugins: [errorBars],
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: true },
        scales: { x: axis(spec.x, false), y: axis(spec.y, true) },
        plugins: {
          title: { display: true, text: spec.title, font: { size: 14 } },
          legend: { position: spec.series.length > 6 ? "bottom" : "right", labels: { usePointStyle: true, boxWidth: 8, font: { size: 11 } } },
          tooltip: {
            filter: (item) => !item.dataset.reference,
            callbacks: { title: (items) => (items.length ? items[0].dataset.label : ""), label: (ctx) => tooltipLines(run, ctx.raw.key, ctx.raw) },
          },
        },
      },
    });
    const marks = spec.series.filter((s) => !s.reference).reduce((n, s) => n + s.points.length, 0);
    T.charts.push({ chart, canvas, spec, marks, run: run.run_id, figure: spec.figure });
    return box;
  }

  // ---- recommend: recommend.py's budget rules, on the embedded variant table --------------------
  const FITS = "fits", OVER = "over budget", NOT = "not measured";
  function judge(run, b) {
    const out = run.variants.map((v, i) => {
      const missing = [], over = [], notes = [];
      if (b.max_gflops != null) {
        if (v.gflops == null) missing.push(v.why.gflops);
        else if (v.gflops > b.max_gflops) over.push(`${fmt(v.gflops)} GFLOPs > ${b.max_gflops}`);
      }
      if (b.min_speedup != null) {
        const low = v.speedup_low != null ? v.speedup_low : v.speedup;
        if (low == null) missing.push(v.why.speedup);
        else {
          if (v.speedup_low == null) notes.push("no speedup interval: judged on the point estimate");
          if (low < b.min_speedup) over.push(`speedup ${v.speedup_low != null ? "lower bound " : ""}${fmt(low, 3)}x < ${b.min_speedup}x`);
        }
      }
      if (b.max_accuracy_drop != null) {
        if (v.acc_mean == null) missing.push(v.why.acc);
        else if (v.acc_drop == null) missing.push("no baseline accuracy to measure the drop from");
        else if (v.acc_drop > b.max_accuracy_drop) over.push(`accuracy drop ${v.acc_drop.toFixed(2)} pt > ${b.max_accuracy_drop}`);
      }
      const verdict = missing.length ? NOT : over.length ? OVER : FITS;
      const reason = (missing.length ? missing.concat(notes) : over.concat(notes)).join("; ");
      return { i, v, verdict, reason, pareto: null };
    });
    const pts = out.filter((r) => r.verdict === FITS && r.v.gflops != null && r.v.acc_mean != null);
    for (const r of pts) {
      const g = r.v.gflops, a = r.v.acc_mean;
      r.pareto = !pts.some((o) => o !== r && o.v.gflops <= g && o.v.acc_mean >= a && (o.v.gflops < g || o.v.acc_mean > a));
    }
    const rankV = { [FITS]: 0, [NOT]: 1, [OVER]: 2 };
    const last = (x, sign) => (x == null ? Infinity : sign * x);
    out.sort((p, q) => rankV[p.verdict] - rankV[q.verdict] || (p.pareto ? 0 : 1) - (q.pareto ? 0 : 1) ||
      last(p.v.acc_mean, -1) - last(q.v.acc_mean, -1) || last(p.v.gflops, 1) - last(q.v.gflops, 1) ||
      (p.v.variant < q.v.variant ? -1 : p.v.variant > q.v.variant ? 1 : 0));
    let rank = 0;
    out.forEach((r) => { r.rank = r.verdict === FITS ? ++rank : null; });
    return out;
  }
  T.judge = (runIndex, budget) => judge(DATA.runs[runIndex], budget).filter((r) => r.verdict === FITS).map((r) => r.v.model + "/" + r.v.variant);

  function budgets(run, ri) {
    const box = el("div", { class: "budgets" });
    const fields = [
      ["max_gflops", "max GFLOPs", run.has.gflops, "gflops"],
      ["min_speedup", "min speedup (× lower 95% bound)", run.has.speedup, "speedup"],
      ["max_accuracy_drop", "max accuracy drop (points, worst probe set)", run.has.accuracy, "fewshot_acc"],
    ];
    const inputs = {};
    for (const [name, label, ok, metric] of fields) {
      const input = el("input", { type: "number", step: "any", min: "0", "data-budget": name, id: `b-${ri}-${name}` });
      if (!ok) { input.disabled = true; input.title = `this run has no ${metric} rows`; }
      inputs[name] = input;
      box.append(el("label", { for: input.id }, label + " ", input));
    }
    const result = el("div", { "data-recommend": String(ri) });
    function update() {
      const b = {};
      for (const [name, input] of Object.entries(inputs)) {
        const x = parseFloat(input.value);
        b[name] = input.value.trim() === "" || !isFinite(x) || x < 0 ? null : x;
      }
      const rows = judge(run, b);
      const none = Object.values(b).every((x) => x == null);
      const fits = rows.filter((r) => r.verdict === FITS);
      result.replaceChildren(
        el("p", { "data-fits": String(fits.length), text: (none ? "No limits set: every variant fits. " : "") +
          `${fits.length} of ${rows.length} variants fit` + (fits.length ? `; recommended: ${fits.filter((r) => r.pareto).map((r) => r.v.variant).join(", ") || fits[0].v.variant}.` : ".") }),
        table(["rank", "model", "variant", "method", "GFLOPs", "speedup", "speedup low", "mean acc %", "acc drop pt", "verdict", "reason", "Pareto"],
          rows.map((r) => [r.rank, r.v.model, r.v.variant, r.v.method_label, r.v.gflops, r.v.speedup, r.v.speedup_low,
            r.v.acc_mean == null ? null : +r.v.acc_mean.toFixed(2), r.v.acc_drop == null ? null : +r.v.acc_drop.toFixed(2),
            r.verdict, r.reason, r.pareto == null ? "" : r.pareto ? "yes" : "no"]),
          { id: "recommend", rowClass: (i) => (rows[i].verdict === FITS ? "fits" : "") + (rows[i].pareto ? " pareto" : "") }),
      );
    }
    Object.values(inputs).forEach((input) => input.addEventListener("input", update));
    update();
    return el("div", {}, box, result);
  }

  // ---- one run -----------------------------------------------------------------------------------
  function answer(run) {
    const box = el("div", { class: "answer" });
    const base = {};
    run.variants.forEach((v) => { if (v.variant === "baseline") base[v.model] = v; });
    if (!run.variants.length) { box.append(el("p", { text: "Nothing measured yet." })); return box; }
    if (run.front.length) {
      const k = run.shots, ds = run.datasets.join(", ");
      box.append(el("p", { html: `<b>Best for their compute</b> (the Pareto front over GFLOPs and mean ${k}-shot accuracy on ${esc(ds)}: no other variant is both cheaper and more accurate), ${run.front.length} of ${run.variants.length} variants, cheapest first:` }));
      const ol = el("ol");
      for (const i of run.front) {
        const v = run.variants[i], b = base[v.model];
        const rel = b && b.gflops && v.variant !== "baseline" ? ` (${fmt(v.gflops / b.gflops, 3)}× the baseline's)` : "";
        const drop = v.acc_drop == null || v.variant === "baseline" ? "" : v.acc_drop >= 0 ? `, worst drop ${v.acc_drop.toFixed(2)} pt`
          : `, above the baseline on every probe set (by at least ${(-v.acc_drop).toFixed(2)} pt)`;
        const sp = v.speedup != null ? `, speedup ${fmt(v.speedup, 3)}×` : "";
        ol.append(el("li", { text: `${run.models.length > 1 ? v.model + " " : ""}${v.variant} — ${v.method_label}, p = ${posLabel(v.position)}, S = ${v.tokens == null ? "all" : v.tokens}: ${fmt(v.gflops)} GFLOPs${rel}, mean accuracy ${pct(v.acc_mean)}${drop}${sp}` }));
      }
      box.append(ol);
    } else if (run.has.gflops) {
      const cheap = run.variants.filter((v) => v.gflops != null).sort((a, b) => a.gflops - b.gflops).slice(0, 3);
      box.append(el("p", { text: "No accuracy was measured, so there is no trade-off to rank. Cheapest variants: " +
        cheap.map((v) => `${run.models.length > 1 ? v.model + " " : ""}${v.variant} (${fmt(v.gflops)} GFLOPs)`).join(", ") + "." }));
    }
    return box;
  }

  function runSection(run, ri) {
    const s = el("section", { id: `run-${ri}`, "data-run": run.run_id });
    s.append(el("h2", { text: `${run.name} / ${run.run_id}` }), el("p", { class: "muted", text: `${run.dir} — ${run.status}` }));
    s.append(el("h3", { text: "Question and answer" }), el("p", { text: run.question }), answer(run));
    for (const m of run.missing) s.append(el("p", { class: "missing", "data-missing": "", text: m }));
    if (run.charts.length) s.append(chartBox(run, run.charts[0], true));
    s.append(el("h3", { text: "Which variant fits my budget?" }),
      el("p", { class: "muted", text: "Computed in this page from the embedded rows, with tlbench recommend's rules: GFLOPs ≤ max; the speedup's lower 95% bound ≥ min; the worst probe set's drop from the baseline ≤ max. Fitting variants are green, the Pareto front among them bold." }),
      budgets(run, ri));
    if (run.charts.length > 1) {
      s.append(el("h3", { text: `Figures (${run.charts.length})` }));
      s.append(el("div", { class: "charts" }, ...run.charts.slice(1).map((c) => chartBox(run, c, false))));
    }
    if (run.maps.length || run.map_tables.length) {
      s.append(el("h3", { text: "TokenLearner maps" }));
      const maps = el("div", { class: "maps" });
      for (const m of run.maps) maps.append(el("figure", {}, el("img", { src: m.src, alt: m.name, loading: "lazy" }), el("figcaption", { text: m.name })));
      for (const t of run.map_tables) maps.append(el("p", { text: t.name }), table(t.columns, t.rows));
      s.append(maps);
    }
    if (run.summary) s.append(el("h3", { text: "Every variant" }), table(run.summary.columns, run.summary.rows, { id: "summary" }));
    s.append(el("h3", { text: "What did not run" }));
    if (!run.not_done.length) s.append(el("p", { text: "Every recorded unit finished. " + run.status }));
    for (const u of run.not_done) {
      const d = el("details", { "data-unit": u.status }, el("summary", { text: `${u.status}: ${[u.model, u.variant, u.stage].filter(Boolean).join(" ")} — ${u.reason}` }));
      if (u.tail) d.append(el("p", { class: "muted", text: `last lines of ${u.log}` }), el("pre", { text: u.tail }));
      s.append(d);
    }
    s.append(el("h3", { text: "Manifest" }));
    const man = run.manifest;
    const facts = [
      ["command", (man.argv || []).join(" ")], ["git SHA", man.git_sha], ["started", man.started], ["finished (last unit)", run.finished],
      ["device", JSON.stringify(man.device)], ["hosts", run.hosts.join(", ")], ["GPUs", run.gpus.join(", ")],
      ["versions", Object.entries(man.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
    ];
    s.append(table(["field", "value"], facts.filter((f) => f[1])), el("details", {}, el("summary", { text: "config and variants (manifest.json)" }), el("pre", { text: JSON.stringify(man, null, 2) })));
    const rows = el("details", {}, el("summary", { text: `Long rows (${run.rows.rows.length}), as in results.csv` }));
    let filled = false;
    rows.addEventListener("toggle", () => { if (!filled) { rows.append(table(run.rows.columns, run.rows.rows, { id: "rows" })); filled = true; } });
    s.append(rows);
    return s;
  }

  function compareSection() {
    const s = el("section", { id: "compare" }, el("h2", { text: `Comparing ${DATA.runs.length} runs` }));
    for (const c of DATA.compare) {
      const nb = c.findings.filter((f) => f.status !== "extra").length;
      s.append(el("p", { "data-verdict": c.passed ? "reproduced" : "differs", html:
        `<b>tlbench compare</b> ${esc(c.run)} vs ${esc(c.reference)}: <span class="${c.passed ? "ok" : "bad"}">${c.passed ? "reproduced" : "DIFFERS"}</span> (${c.checks} checks, ${nb} not ok; accuracy tolerance ${c.acc_tol})` }));
      if (c.findings.length) s.append(table(["model", "variant", "stage", "metric", "dataset", "shots", "status", "run", "reference", "note"],
        c.findings.map((f) => [f.model, f.variant, f.stage, f.metric, f.dataset, f.shots, f.status, f.value, f.reference_value, f.note])));
    }
    const keys = [], seen = new Set();
    DATA.runs.forEach((r) => r.variants.forEach((v) => { const k = v.model + "/" + v.variant; if (!seen.has(k)) { seen.add(k); keys.push(k); } }));
    const cols = ["model", "variant"];
    DATA.runs.forEach((r, i) => cols.push(`GFLOPs #${i + 1}`, `speedup #${i + 1}`, `mean acc % #${i + 1}`));
    const rows = keys.map((k) => {
      const [m, name] = [k.slice(0, k.indexOf("/")), k.slice(k.indexOf("/") + 1)];
      const row = [m, name];
      DATA.runs.forEach((r) => {
        const v = r.variants.find((x) => x.model === m && x.variant === name);
        row.push(v ? v.gflops : null, v ? v.speedup : null, v && v.acc_mean != null ? +v.acc_mean.toFixed(2) : null);
      });
      return row;
    });
    s.append(el("h3", { text: "Side by side" }), el("p", { class: "muted", text: DATA.runs.map((r, i) => `#${i + 1} ${r.name}/${r.run_id} (${r.manifest.device ? r.manifest.device.name : "?"})`).join("; ") }), table(cols, rows, { id: "side" }));
    return s;
  }

  const nav = el("nav", {}, ...DATA.runs.map((r, i) => el("a", { href: `#run-${i}`, text: `${r.name}/${r.run_id}` })));
  const title = DATA.runs.length > 1 ? `tlbench: ${DATA.runs.length} runs compared` : `tlbench report: ${DATA.runs[0].name}`;
  app.replaceChildren(el("h1", { text: title }), nav);
  if (DATA.compare.length) app.append(compareSection());
  DATA.runs.forEach((r, i) => app.append(runSection(r, i)));
  T.readyMs = performance.now(); // since navigation start: what docs/report.md reports as the open time
  T.ready = true;
})();
