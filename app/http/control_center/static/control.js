// The control center's dashboard: the live /detect latency chart (uPlot) and the inference panel (a one-frame job).
// Plain JS, no build step; everything it calls is this app's own URL.
"use strict";

(function () {
  const LABEL_COLORS = { pothole: "#ffb74d", traffic_cone: "#ff8a65", debris: "#ba68c8", crack: "#4fc3f7" };
  const FALLBACK_COLORS = ["#4db6ac", "#aed581", "#f06292", "#90a4ae"];
  const POLL_MS = 300;
  const JOB_TIMEOUT_MS = 60000;
  const FINISHED = ["completed", "failed", "cancelled"];

  function colorOf(label) {
    if (LABEL_COLORS[label]) return LABEL_COLORS[label];
    let hash = 0;
    for (const ch of label) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return FALLBACK_COLORS[hash % FALLBACK_COLORS.length];
  }

  // --- The latency chart -------------------------------------------------------------------------------------

  function startLatencyChart() {
    const el = document.getElementById("latency-chart");
    const summary = document.getElementById("latency-summary");
    if (!el || typeof uPlot === "undefined") return;
    const axis = { stroke: "#a0a0a0", grid: { stroke: "#3a3a3a" }, ticks: { stroke: "#3a3a3a" } };
    const options = {
      width: Math.max(el.clientWidth, 240),
      height: 220,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(200, (max || 0) * 1.15)] } },
      series: [
        {},
        // Points too: a bucket between two empty ones is a point, not a line.
        { label: "P50", stroke: "#4db6ac", width: 2, points: { show: true, size: 5, fill: "#4db6ac" } },
        { label: "P95", stroke: "#ffb74d", width: 2, points: { show: true, size: 5, fill: "#ffb74d" } },
        { label: "target 150 ms", stroke: "#e57373", width: 1.5, dash: [6, 4], points: { show: false } },
      ],
      axes: [axis, { ...axis, size: 60, values: (u, values) => values.map((v) => v + " ms") }],
    };
    let chart = null;

    async function refresh() {
      let answer;
      try {
        answer = await fetch(el.dataset.source, { headers: { accept: "application/json" } });
      } catch (err) {
        return; // the next tick tries again
      }
      if (answer.status === 401) {
        window.location.assign("/admin/login");
        return;
      }
      if (!answer.ok) return;
      const series = await answer.json();
      const data = [series.starts, series.p50_ms, series.p95_ms, series.starts.map(() => series.target_ms)];
      if (chart === null) {
        chart = new uPlot(options, data, el);
      } else {
        chart.setData(data);
      }
      el.dataset.points = String(series.counts.reduce((a, b) => a + b, 0));
      let last = -1;
      series.counts.forEach((count, i) => { if (count > 0) last = i; });
      summary.textContent = last < 0
        ? "No /detect answers in the last 10 minutes."
        : `Latest ${series.bucket_seconds} s with answers: P50 ${series.p50_ms[last]} ms, ` +
          `P95 ${series.p95_ms[last]} ms (${series.counts[last]} answers). Target: P95 under ${series.target_ms} ms.`;
    }

    window.addEventListener("resize", () => {
      if (chart) chart.setSize({ width: Math.max(el.clientWidth, 240), height: 220 });
    });
    refresh();
    setInterval(refresh, 2000);
  }

  // --- The inference panel -------------------------------------------------------------------------------------

  function startInference() {
    const form = document.getElementById("inference-form");
    if (!form) return;
    const zone = document.getElementById("drop-zone");
    const input = document.getElementById("file-input");
    const chosen = document.getElementById("chosen-file");
    const button = document.getElementById("detect-button");
    const status = document.getElementById("inference-status");
    const confidence = document.getElementById("confidence");
    const confidenceValue = document.getElementById("confidence-value");
    const modelSelect = document.getElementById("model-select");
    const result = document.getElementById("inference-result");
    const canvas = document.getElementById("result-canvas");
    const labels = document.getElementById("result-labels");
    const json = document.getElementById("result-json");
    let file = null;

    function choose(picked) {
      if (!picked) return;
      file = picked;
      chosen.textContent = `${picked.name} (${Math.round(picked.size / 1024)} KiB)`;
      button.disabled = false;
    }

    function say(text, { busy = false, error = false } = {}) {
      status.replaceChildren();
      if (busy) {
        const spinner = document.createElement("span");
        spinner.className = "spinner";
        spinner.setAttribute("aria-hidden", "true");
        status.append(spinner, " ");
      }
      status.append(text);
      status.classList.toggle("error", error);
      form.classList.toggle("busy", busy);
    }

    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      choose(event.dataTransfer && event.dataTransfer.files[0]);
      if (file) form.requestSubmit();
    });
    input.addEventListener("change", () => choose(input.files[0]));
    confidence.addEventListener("input", () => { confidenceValue.textContent = Number(confidence.value).toFixed(2); });

    async function call(method, url, body) {
      const answer = await fetch(url, { method, body, headers: { accept: "application/json" } });
      const payload = await answer.json().catch(() => null);
      if (!answer.ok) {
        const error = payload && payload.error ? payload.error : { code: `HTTP_${answer.status}`, message: "" };
        throw new Error(`${error.code}: ${error.message}`);
      }
      return payload;
    }

    async function waitFor(jobId) {
      const giveUpAt = Date.now() + JOB_TIMEOUT_MS;
      for (;;) {
        const job = await call("GET", `/jobs/${encodeURIComponent(jobId)}`);
        if (FINISHED.includes(job.status)) return job;
        if (Date.now() > giveUpAt) throw new Error(`job ${jobId} still ${job.status} after 60 s`);
        say(`Job ${jobId}: ${job.status}…`, { busy: true });
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    }

    async function draw(picked, item) {
      const image = new Image();
      const url = URL.createObjectURL(picked);
      try {
        image.src = url;
        await image.decode();
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(image, 0, 0);
        const line = Math.max(3, Math.round(canvas.width / 320));
        const fontSize = Math.max(14, Math.round(canvas.width / 60));
        ctx.lineWidth = line;
        ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
        ctx.textBaseline = "bottom";
        labels.replaceChildren();
        for (const d of item.detections) {
          const { x1, y1, x2, y2 } = d.box;
          const color = colorOf(d.label);
          const text = `${d.label} ${d.confidence.toFixed(2)}`;
          ctx.strokeStyle = color;
          ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
          const width = ctx.measureText(text).width + 8;
          const top = y1 - fontSize - 6 < 0 ? y1 + fontSize + 6 : y1;
          ctx.fillStyle = color;
          ctx.fillRect(x1 - line / 2, top - fontSize - 6, width, fontSize + 6);
          ctx.fillStyle = "#111";
          ctx.fillText(text, x1 + 4 - line / 2, top - 3);
          const li = document.createElement("li");
          li.textContent = text;
          li.dataset.label = d.label;
          li.style.setProperty("--swatch", color);
          labels.append(li);
        }
        canvas.dataset.boxes = String(item.detections.length);
      } finally {
        URL.revokeObjectURL(url);
      }
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!file) return;
      const picked = file;
      button.disabled = true;
      result.hidden = true;
      const options = { conf: Number(confidence.value) };
      if (modelSelect.value) options.model = modelSelect.value;
      const body = new FormData();
      body.append("job", JSON.stringify({ name: `control center: ${picked.name}`.slice(0, 200), options }));
      body.append("file", picked, picked.name);
      try {
        say("Sending the frame…", { busy: true });
        const created = await call("POST", "/jobs", body);
        await call("POST", `/jobs/${encodeURIComponent(created.job_id)}/close`);
        const job = await waitFor(created.job_id);
        const page = await call("GET", `/jobs/${encodeURIComponent(created.job_id)}/results?limit=1`);
        const item = page.items[0];
        if (job.status !== "completed" || !item || item.status !== "done") {
          const why = item && item.error ? `${item.error.code}: ${item.error.message}` : `job ${job.status}`;
          throw new Error(why);
        }
        await draw(picked, item);
        json.textContent = JSON.stringify(item, null, 2);
        result.hidden = false;
        result.dataset.jobId = created.job_id;
        say(`${item.detections.length} detection(s) by ${item.model ? item.model.name : "the model"}, job ${created.job_id}.`);
      } catch (err) {
        say(`Detection failed: ${err.message}`, { error: true });
      } finally {
        button.disabled = false;
      }
    });

    // The model list follows the model control panel: versions loaded here can be picked for a frame.
    document.body.addEventListener("htmx:afterSwap", (event) => {
      if (event.target.id !== "model-control") return;
      const loaded = [...event.target.querySelectorAll("tr[data-model]")]
        .filter((row) => row.dataset.state === "available" && row.dataset.active !== "true")
        .map((row) => row.dataset.model);
      const current = modelSelect.value;
      const wanted = ["", ...loaded];
      const have = [...modelSelect.options].map((option) => option.value);
      if (wanted.join("\n") === have.join("\n")) return;
      modelSelect.replaceChildren(...wanted.map((name) => new Option(name || "active version", name)));
      modelSelect.value = wanted.includes(current) ? current : "";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    startLatencyChart();
    startInference();
  });
})();
