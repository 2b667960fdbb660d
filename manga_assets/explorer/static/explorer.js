// manga-assets explorer: the home page (UMAP and ranked list) and the galaxy page.
// Vanilla JavaScript, no external resources: the application works offline.
"use strict";

const explorer = (() => {
  const params = new URLSearchParams(location.search);
  const state = { model: params.get("model") || "", points: [], scale: null };

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function element(tag, attributes = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== "") node.textContent = text;
    return node;
  }

  function number(value, digits = 2) {
    if (value === null || value === undefined) return "";
    if (Math.abs(value) > 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) {
      return value.toExponential(digits);
    }
    return value.toFixed(digits);
  }

  function galaxyUrl(plateifu) {
    return `/galaxy/${plateifu}?model=${state.model}`;
  }

  // Viridis, sampled at nine stops and interpolated linearly.
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  function colour(fraction) {
    const f = Math.min(1, Math.max(0, fraction)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(f));
    const t = f - i;
    const c = VIRIDIS[i].map((v, k) => Math.round(v + t * (VIRIDIS[i + 1][k] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  async function setUpHeader(info) {
    const select = document.getElementById("model");
    const models = Object.keys(info.models);
    if (!state.model || !models.includes(state.model)) state.model = models[0];
    for (const name of models) {
      const option = element("option", { value: name }, name);
      if (name === state.model) option.selected = true;
      select.appendChild(option);
    }
    select.addEventListener("change", () => {
      const url = new URL(location.href);
      url.searchParams.set("model", select.value);
      location.href = url.toString();
    });
    document.getElementById("reviewer").textContent = `reviewer: ${info.reviewer}`;
  }

  async function nextInQueue(n = 1) {
    return getJSON(`/api/queue?model=${state.model}&n=${n}`);
  }

  // -- home page ---------------------------------------------------------------------------------

  function drawUmap(rows) {
    const canvas = document.getElementById("umap");
    const context = canvas.getContext("2d");
    const placed = rows.filter((row) => row.umap_x !== null && row.umap_y !== null);
    const xs = placed.map((row) => row.umap_x);
    const ys = placed.map((row) => row.umap_y);
    const pad = 20;
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (canvas.width - 2 * pad) / (x1 - x0 || 1);
    const sy = (canvas.height - 2 * pad) / (y1 - y0 || 1);
    const top = Math.max(3, ...placed.map((row) => row.anomaly_score || 0));
    context.clearRect(0, 0, canvas.width, canvas.height);
    const radius = placed.length > 2000 ? 2 : 5;
    // Least anomalous first, so that the rare galaxies are drawn on top.
    const order = [...placed].sort((a, b) => (a.anomaly_score || 0) - (b.anomaly_score || 0));
    state.points = order.map((row) => ({
      plateifu: row.plateifu,
      x: pad + (row.umap_x - x0) * sx,
      y: canvas.height - pad - (row.umap_y - y0) * sy,
    }));
    order.forEach((row, i) => {
      context.beginPath();
      context.arc(state.points[i].x, state.points[i].y, radius, 0, 2 * Math.PI);
      context.fillStyle = colour((row.anomaly_score || 0) / top);
      context.fill();
    });
    const legend = document.getElementById("umap-legend");
    legend.innerHTML = "";
    const bar = element("canvas", { class: "bar", width: 200, height: 10 });
    const barContext = bar.getContext("2d");
    for (let x = 0; x < 200; x++) {
      barContext.fillStyle = colour(x / 199);
      barContext.fillRect(x, 0, 1, 10);
    }
    legend.append(element("span", {}, "anomaly score 0"), bar, element("span", {}, number(top, 1)));
    canvas.onclick = (event) => {
      const box = canvas.getBoundingClientRect();
      const x = (event.clientX - box.left) * (canvas.width / box.width);
      const y = (event.clientY - box.top) * (canvas.height / box.height);
      const hit = pointAt(x, y, 10);
      if (hit) location.href = galaxyUrl(hit.plateifu);
    };
    canvas.onmousemove = (event) => {
      const box = canvas.getBoundingClientRect();
      const hit = pointAt(event.clientX - box.left, event.clientY - box.top, 10);
      canvas.title = hit ? hit.plateifu : "";
    };
  }

  function pointAt(x, y, within) {
    let best = null;
    let bestDistance = within * within;
    for (const point of state.points) {
      const d = (point.x - x) ** 2 + (point.y - y) ** 2;
      if (d <= bestDistance) { best = point; bestDistance = d; }
    }
    return best;
  }

  // Where a galaxy is drawn, in page coordinates (for people's scripts and the tests).
  function pointPosition(plateifu) {
    const point = state.points.find((p) => p.plateifu === plateifu);
    if (!point) return null;
    const canvas = document.getElementById("umap");
    const box = canvas.getBoundingClientRect();
    return { x: box.left + point.x * (box.width / canvas.width),
      y: box.top + point.y * (box.height / canvas.height) };
  }

  function fillRanked(rows) {
    const bpt = document.getElementById("filter-bpt").value;
    const component = document.getElementById("filter-component").value;
    const fdrText = document.getElementById("filter-fdr").value;
    const fdr = fdrText === "" ? null : Number(fdrText);
    const kept = rows.filter((row) => (!bpt || row.bpt_class === bpt)
      && (!component || row.anomaly_component === component)
      && (fdr === null || (row.q_value !== null && row.q_value <= fdr)));
    const body = document.querySelector("#ranked tbody");
    body.innerHTML = "";
    for (const row of kept.slice(0, 500)) {
      const tr = element("tr", { "data-plateifu": row.plateifu });
      const link = element("a", { href: galaxyUrl(row.plateifu) }, row.plateifu);
      const cells = [row.rank, link, number(row.anomaly_score), number(row.q_value, 3),
        row.anomaly_component, row.anomaly_line, row.bpt_class, row.quality_flags || ""];
      for (const cell of cells) {
        const td = element("td");
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell ?? "";
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    document.getElementById("ranked-count").textContent =
      `${kept.length} of ${rows.length} galaxies` + (kept.length > 500 ? " (first 500 shown)" : "");
  }

  async function fillQueue() {
    const list = document.getElementById("queue");
    list.innerHTML = "";
    for (const row of await nextInQueue(10)) {
      const item = element("li", { "data-plateifu": row.plateifu });
      item.appendChild(element("a", { href: galaxyUrl(row.plateifu) }, row.plateifu));
      item.append(` score ${number(row.anomaly_score)}`);
      list.appendChild(item);
    }
  }

  async function home() {
    const info = await getJSON("/api/info");
    await setUpHeader(info);
    for (const name of info.bpt_classes) {
      document.getElementById("filter-bpt").appendChild(element("option", { value: name }, name));
    }
    for (const name of info.components) {
      document.getElementById("filter-component")
        .appendChild(element("option", { value: name }, name));
    }
    document.getElementById("review-next").onclick = async () => {
      const [next] = await nextInQueue(1);
      if (next) location.href = galaxyUrl(next.plateifu);
    };
    const rows = await getJSON(`/api/galaxies?model=${state.model}`);
    drawUmap(rows);
    fillRanked(rows);
    document.getElementById("filters").oninput = () => fillRanked(rows);
    await fillQueue();
    document.body.dataset.ready = "true";
  }

  // -- galaxy page -------------------------------------------------------------------------------

  function table(target, pairs) {
    target.innerHTML = "";
    for (const [name, value] of pairs) {
      const tr = element("tr");
      tr.append(element("th", {}, name), element("td", {}, value ?? ""));
      target.appendChild(tr);
    }
  }

  function showLabels(labels) {
    const list = document.getElementById("labels");
    list.innerHTML = "";
    for (const label of labels) {
      list.appendChild(element("li", {},
        `${label.reviewer}: ${label.label}${label.note ? " - " + label.note : ""} (${label.time})`));
    }
  }

  async function galaxy() {
    const plateifu = decodeURIComponent(location.pathname.split("/").pop());
    const info = await getJSON("/api/info");
    await setUpHeader(info);
    document.title = `${plateifu} - manga-assets explorer`;
    document.getElementById("title").textContent = plateifu;
    let data;
    try {
      data = await getJSON(`/api/galaxy/${plateifu}?model=${state.model}`);
    } catch (error) {
      const box = document.getElementById("error");
      box.hidden = false;
      box.textContent = error.message;
      return;
    }
    const s = data.scores;
    document.getElementById("title").textContent =
      `${plateifu}: rank ${s.rank} of ${info.models[state.model].galaxies} (${state.model})`;
    table(document.getElementById("scores"), [
      ["anomaly score", number(s.anomaly_score)],
      ["p-value", number(data.p_value, 3)],
      ["q-value (BH)", number(data.q_value, 3)],
      ["decided by", `${s.anomaly_component}${s.anomaly_line ? " (" + s.anomaly_line + ")" : ""}`],
      ["central BPT class", data.bpt.bpt_class || ""],
      ["redshift", number(data.catalog.z, 4)],
      ["model_id", data.model_id],
    ]);
    const components = document.querySelector("#components tbody");
    for (const row of data.components) {
      const tr = element("tr");
      tr.append(element("td", {}, row.component), element("td", {}, number(row.value)),
        element("td", {}, number(row.p, 3)));
      components.appendChild(tr);
    }
    const flags = document.getElementById("flags");
    for (const flag of data.quality_flags) flags.appendChild(element("li", {}, flag));
    if (!data.quality_flags.length) flags.appendChild(element("li", {}, "none"));
    for (const kind of ["smoothed", "residual", "lines", "reconstruction", "bpt"]) {
      document.getElementById(`img-${kind}`).src = data.images[kind];
    }
    const neighbours = document.getElementById("neighbours");
    for (const n of data.neighbours) {
      const link = element("a", { href: galaxyUrl(n.plateifu), title: `distance ${number(n.distance)}` });
      link.append(element("img", { src: n.thumbnail, alt: n.plateifu, loading: "lazy" }),
        element("span", {}, n.plateifu));
      neighbours.appendChild(link);
    }
    showLabels(data.labels);
    document.getElementById("label-form").onsubmit = async (event) => {
      event.preventDefault();
      const chosen = document.querySelector("input[name=label]:checked");
      const status = document.getElementById("label-status");
      if (!chosen) { status.textContent = "choose a label first"; return; }
      try {
        await getJSON("/api/labels", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ plateifu, label: chosen.value, model: state.model,
            note: document.getElementById("note").value }),
        });
      } catch (error) {
        status.textContent = `not saved: ${error.message}`;
        return;
      }
      const [next] = await nextInQueue(1);
      status.textContent = next ? `saved; next: ${next.plateifu}` : "saved; the queue is empty";
      if (next) location.href = galaxyUrl(next.plateifu);
    };
    document.body.dataset.ready = "true";
  }

  return { home, galaxy, pointPosition };
})();
