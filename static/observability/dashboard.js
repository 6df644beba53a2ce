/* The operator dashboard (docs/dashboard.md): draws the figures rendered into the page, then polls
   the JSON endpoint every `data-refresh-seconds` and redraws. Text goes in with textContent only. */
(function () {
  "use strict";
  const root = document.getElementById("sovereign-dashboard");
  if (!root || typeof Chart === "undefined") return;
  const COLORS = ["#417690", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"];
  const charts = {};
  const windowSelect = document.getElementById("sov-window");
  // the page's language (the person's setting may differ from the browser's): a Chinese page said "1:21:25 AM"
  const LOCALE = [document.documentElement.lang || undefined];
  const number = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(LOCALE, { style: "percent", maximumFractionDigits: 2 });

  function label(iso, periodSeconds) {
    const d = new Date(iso);
    return periodSeconds < 3600 ? d.toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString(LOCALE, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
  }

  function draw(id, labels, datasets, yOptions) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    if (charts[id]) {
      charts[id].data.labels = labels;
      charts[id].data.datasets = datasets;
      charts[id].update("none");
      return;
    }
    charts[id] = new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, spanGaps: true,
        interaction: { mode: "index", intersect: false },
        elements: { point: { radius: 0 }, line: { borderWidth: 1.5 } },
        scales: { x: { ticks: { maxTicksLimit: 8 } }, y: Object.assign({ beginAtZero: true }, yOptions || {}) },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
  }

  function line(name, values, i, dashed) {
    const color = COLORS[i % COLORS.length];
    return { label: name, data: values, borderColor: color, backgroundColor: color, borderDash: dashed ? [4, 3] : [] };
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function fill(id, rows, render) {
    const table = document.getElementById(id);
    if (!table) return;
    const body = table.tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      const td = document.createElement("td");
      td.colSpan = table.tHead.rows[0].cells.length;
      td.textContent = root.dataset.none;
      tr.appendChild(td);
      return;
    }
    rows.forEach(function (item) { render(body.insertRow(), item); });
  }

  function when(iso) { return iso ? new Date(iso).toLocaleString(LOCALE) : null; }
  function num(v) { return v === null || v === undefined ? null : number.format(v); }
  function pct(v) { return v === null || v === undefined ? null : percent.format(v); }

  function render(data) {
    const calls = data.calls;
    const labels = calls.labels.map(function (iso) { return label(iso, calls.period_seconds); });
    const models = calls.models;
    draw("sov-chart-calls", labels, models.map(function (m, i) { return line(m.model, m.calls_per_second, i); }));
    draw("sov-chart-latency", labels, models.flatMap(function (m, i) {
      return [line(m.model + " p95", m.p95_ms, i), line(m.model + " p50", m.p50_ms, i, true)];
    }));
    draw("sov-chart-errors", labels, models.map(function (m, i) { return line(m.model, m.error_rate, i); }),
      { ticks: { callback: function (v) { return percent.format(v); } } });
    draw("sov-chart-tokens", labels, models.flatMap(function (m, i) {
      // the words come translated from the page (data-tokens-out/-in): a Chinese page showed "smollm2 out"
      return [line(m.model + " " + root.dataset.tokensOut, m.tokens_out, i),
        line(m.model + " " + root.dataset.tokensIn, m.tokens_in, i, true)];
    }));
    fill("sov-versions", calls.versions, function (tr, v) {
      cell(tr, v.model); cell(tr, v.version || "—"); cell(tr, num(v.calls), "num"); cell(tr, num(v.denied), "num");
      cell(tr, pct(v.error_rate), "num"); cell(tr, num(v.p50_ms), "num"); cell(tr, num(v.p95_ms), "num");
      cell(tr, num(v.tokens_in), "num"); cell(tr, num(v.tokens_out), "num");
    });
    if (data.fleet) {
      fill("sov-live", data.fleet.live, function (tr, v) {
        cell(tr, v.model); cell(tr, v.version); cell(tr, v.weight, "num");
        cell(tr, v.active + " / " + v.replicas, v.active < v.replicas ? "num sov-state-down" : "num");
      });
      fill("sov-servers", data.fleet.servers, function (tr, s) {
        cell(tr, s.name); cell(tr, s.state_label || s.state, "sov-state-" + s.state); cell(tr, when(s.last_seen_at), "sov-time"); cell(tr, s.replicas, "num");
      });
      fill("sov-failed", data.failed_deploys, function (tr, d) {
        cell(tr, d.model); cell(tr, d.version); cell(tr, d.server); cell(tr, when(d.at), "sov-time"); cell(tr, d.reason, "sov-wrap");
      });
    }
    if (data.compliance) {
      const runs = data.compliance.labels.map(function (iso) { return when(iso); });
      draw("sov-chart-compliance", runs, data.compliance.profiles.map(function (p, i) { return line(p.profile, p.scores, i); }),
        { max: 100 });
      fill("sov-compliance", data.compliance.profiles, function (tr, p) {
        cell(tr, p.profile); cell(tr, p.latest === null ? null : p.latest + " %", "num");
        cell(tr, p.previous === null ? null : p.previous + " %", "num");
      });
    }
    document.getElementById("sov-updated").textContent = when(data.generated_at);
    root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
  }

  function refresh() {
    const url = root.dataset.url + "?window=" + encodeURIComponent(windowSelect.value);
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) { document.getElementById("sov-error").hidden = true; render(data); })
      .catch(function () { document.getElementById("sov-error").hidden = false; });
  }

  render(JSON.parse(document.getElementById("dashboard-initial").textContent));
  windowSelect.addEventListener("change", refresh);
  setInterval(refresh, 1000 * Number(root.dataset.refreshSeconds || 15));
})();
