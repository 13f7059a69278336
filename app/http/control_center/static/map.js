// The control center's map page: the hazard registry on a Leaflet map, filters, and the clicked hazard's photo,
// reports, history and verdict buttons. Plain JS, no build step; everything it calls is this app's own URL.
"use strict";

(function () {
  const STATUS_COLORS = {
    open: "#ffb74d", verified: "#e57373", rejected: "#90a4ae", suspected_fixed: "#4fc3f7", closed: "#81c784",
  };
  const CATEGORIES = ["pothole", "pavement_failure", "utility_cut", "other", "not_an_issue"];
  const panel = document.querySelector(".map-panel");
  if (!panel || typeof L === "undefined") return;
  const csrf = panel.dataset.csrf;
  const canJudge = panel.dataset.canJudge === "true";
  const detail = document.getElementById("hazard-detail");
  const count = document.getElementById("map-count");
  const form = document.getElementById("map-filters");

  // Canvas, not SVG: thousands of circles are one bitmap, drawn in a frame (SVG: one DOM node each, seconds).
  const map = L.map("hazard-map", { worldCopyJump: true, preferCanvas: true }).setView([20, 0], 2);
  function sharedView() { // #map=zoom/lat/lon, as OpenStreetMap's links: the view the address names, if any
    const view = /^#map=(\d{1,2})\/(-?[\d.]+)\/(-?[\d.]+)$/.exec(location.hash);
    if (view) map.setView([Number(view[2]), Number(view[3])], Number(view[1]));
    return Boolean(view);
  }
  let keepView = sharedView(); // a shared view is kept on the first load; a new filter fits its hazards
  window.addEventListener("hashchange", sharedView); // a link pasted into this tab
  map.on("moveend", () => {
    const center = map.getCenter();
    history.replaceState(null, "", "#map=" + map.getZoom() + "/" + center.lat.toFixed(6) + "/" + center.lng.toFixed(6));
  });
  if (panel.dataset.tileUrl) {
    L.tileLayer(panel.dataset.tileUrl, { maxZoom: 19, attribution: "map tiles: MAP_TILE_URL" }).addTo(map);
  } // no tiles configured: hazards are drawn on the plain background
  let hazards = null; // the drawn markers (a feature group), replaced as a whole by each load

  function element(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function query() {
    const params = new URLSearchParams();
    const data = new FormData(form);
    if (data.get("status")) params.set("status", data.get("status"));
    if (data.get("label")) params.set("label", data.get("label").trim());
    if (data.get("since")) params.set("since", data.get("since") + "T00:00:00Z");
    return params;
  }

  // One streamed request for every matching hazard, compact (`[id, lat, lon, label, status]` rows), not pages of
  // full records one after another. The markers are made off the map, the view set, then the group added once: the
  // canvas draws them in one pass.
  async function load(fit) {
    const url = "/admin/map/hazards?" + query().toString();
    const response = await fetch(url, { headers: { accept: "application/json" } });
    if (!response.ok) { count.textContent = "registry unavailable (" + response.status + ")"; return; }
    const found = (await response.json()).points;
    performance.mark("hazards-read"); // bench/map_paint.py reads these marks
    const next = L.featureGroup();
    for (const [id, lat, lon, label, status] of found) {
      const marker = L.circleMarker([lat, lon], {
        radius: 6, weight: 1, color: "#111", fillColor: STATUS_COLORS[status] || "#fff", fillOpacity: 0.9,
      });
      marker.hazard = { id, label, status };
      next.addLayer(marker);
    }
    next.bindTooltip((marker) => marker.hazard.label + " · " + marker.hazard.status);
    next.on("click", (event) => show(event.layer.hazard.id));
    if (fit && found.length && !keepView) map.fitBounds(next.getBounds().pad(0.2), { maxZoom: 18 });
    keepView = false;
    if (hazards) hazards.remove();
    hazards = next.addTo(map);
    performance.mark("hazards-placed");
    count.textContent = found.length + " hazards";
    panel.dataset.loaded = String(found.length);
    const drawn = hazards.getLayers().length; // the canvas draws them in the next frame, before this callback
    requestAnimationFrame(() => { panel.dataset.drawn = String(drawn); });
  }

  async function act(id, action, body) {
    const response = await fetch("/admin/map/hazards/" + id + "/" + action, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf, accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      const message = (answer.error && answer.error.message) || response.statusText;
      detail.prepend(element("p", "Refused: " + message, { class: "error", role: "alert" }));
      return;
    }
    await show(id);
    await load(false);
  }

  function buttons(hazard) {
    const box = element("div", null, { class: "verdict-buttons" });
    const note = element("input", null, { name: "note", placeholder: "note (optional)", maxlength: "2000" });
    const judged = hazard.allowed_moves.includes("verify");
    for (const category of judged ? CATEGORIES : []) {
      const button = element("button", category.replace(/_/g, " "), { type: "button", "data-category": category });
      button.addEventListener("click", () => act(hazard.id, "verdict", { category, note: note.value || null }));
      box.append(button);
    }
    if (hazard.allowed_moves.includes("close")) {
      const close = element("button", "close", { type: "button", "data-move": "close" });
      close.addEventListener("click", () => act(hazard.id, "close", { note: note.value || null }));
      box.append(close);
    }
    return box.childElementCount ? [note, box] : [];
  }

  async function show(id) {
    const response = await fetch("/hazards/" + id, { headers: { accept: "application/json" } });
    detail.replaceChildren();
    if (!response.ok) { detail.append(element("p", "Hazard " + id + " could not be read.")); return; }
    const hazard = await response.json();
    detail.dataset.hazardId = String(hazard.id);
    detail.append(element("h3", hazard.label + " #" + hazard.id));
    detail.append(element("p", hazard.status, { class: "hazard-status", "data-status": hazard.status }));
    if (hazard.best_photo_url && /^(https?:\/\/|\/)/.test(hazard.best_photo_url)) {
      detail.append(element("img", null, { src: hazard.best_photo_url, alt: "best photo of hazard " + hazard.id }));
    }
    detail.append(element("p", hazard.reports + " reports · first " + hazard.first_reported + " · last " +
      hazard.last_reported));
    if (canJudge) detail.append(...buttons(hazard));
    const history = element("ol", null, { class: "hazard-history" });
    for (const entry of hazard.history) {
      const why = [entry.category, entry.note].filter(Boolean).join(": ");
      history.append(element("li", entry.at + " " + entry.actor + " " + entry.move + " → " + entry.to_status +
        (why ? " (" + why + ")" : "")));
    }
    detail.append(element("h4", "History"), history);
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(true); });
  load(true);
})();
