// tinygrad_rnn page, part 1 of 3: the page's frame. Data, number formats, pan and zoom, the hover tip,
// the side panel, the view switch and the search. ops.js draws the op view, views.js the step and lag
// views. Every text a user wrote (names, titles) is set with textContent, never parsed as markup.
"use strict";
const TG = (window.TG = {});
TG.DATA = JSON.parse(document.getElementById("page-data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";

// ---- making elements ----------------------------------------------------------------------------
TG.el = function (tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
};
TG.svg = function (tag, attrs, text, parent) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (parent) parent.appendChild(node);
  return node;
};

// ---- numbers: short ones to read (style.number's %g), full ones to check -----------------------
TG.short = function (x, digits) {
  digits = digits || 3;
  if (x === null || x === undefined) return "–";
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(x)));
  const strip = (s) => s.replace(/(\.\d*?)0+(e|$)/, "$1$2").replace(/\.(e|$)/, "$1");
  if (e < -4 || e >= digits) return strip(x.toExponential(digits - 1)).replace(/e([+-])(\d)$/, "e$10$2");
  return strip(x.toFixed(Math.max(0, digits - 1 - e)));
};
TG.full = (x) => (x === null || x === undefined ? "–" : String(x));
TG.clip = (text, n) => { text = String(text); return text.length > n ? text.slice(0, n - 1) + "…" : text; };
TG.size = (shape) => shape.reduce((a, b) => a * b, 1);
TG.shapeText = (shape) => (shape.length ? shape.join(" × ") : "scalar");

// ---- the frame ------------------------------------------------------------------------------------
const D = TG.DATA;
const bar = TG.el("div", { id: "bar" });
bar.appendChild(TG.el("h1", { id: "title", title: D.title || "" }, D.title || "tinygrad_rnn"));
document.title = D.title || "tinygrad_rnn";
const tabs = TG.el("div", { id: "tabs" });
bar.appendChild(tabs);
TG.search = TG.el("input", { id: "search", type: "search", placeholder: "search names, ops, scopes", size: "26" });
bar.appendChild(TG.search);
for (const [id, label] of [["fit", "fit"], ["expand-all", "open all steps"], ["collapse-all", "close all steps"]]) {
  bar.appendChild(TG.el("button", { id: id }, label));
}
TG.film = TG.el("span", { id: "film" });
TG.film.appendChild(TG.el("label", { for: "frame" }, "training iteration"));
TG.frame = TG.el("input", { id: "frame", type: "range", min: "0", max: "0", value: "0" });
TG.film.appendChild(TG.frame);
TG.frameLabel = TG.el("span", { id: "frame-label" });
TG.film.appendChild(TG.frameLabel);
bar.appendChild(TG.film);
const caption = TG.el("div", { id: "caption" });
const main = TG.el("div", { id: "main" });
TG.canvas = TG.svg("svg", { id: "canvas" });
TG.world = TG.svg("g", { id: "world" }, null, TG.canvas);
main.appendChild(TG.canvas);
const side = TG.el("div", { id: "side" });
TG.info = TG.el("div", { id: "info" });
TG.results = TG.el("div", { id: "results" });
TG.legend = TG.el("div", { class: "legend", id: "legend" });
side.append(TG.results, TG.info, TG.legend);
TG.tip = TG.el("div", { id: "tip" });
document.body.append(bar, caption, main, side, TG.tip);
TG.setCaption = (text) => { caption.textContent = text; };
// lines: text; keys: [caption, [[label, colour], ...]], a colour key as the pictures' legends draw it.
TG.setLegend = function (lines, keys) {
  TG.legend.replaceChildren(...lines.filter((line) => line).map((line) => TG.el("p", {}, line)));
  for (const [caption, swatches] of keys || []) {
    TG.legend.appendChild(TG.el("p", {}, caption));
    const row = TG.el("div", { class: "key" });
    for (const [label, colour] of swatches) {
      const swatch = TG.el("span", {}, label);
      swatch.style.borderTopColor = colour;
      row.appendChild(swatch);
    }
    TG.legend.appendChild(row);
  }
};

// ---- tables: the hover tip and the side panel -----------------------------------------------------
// rows: [key, label, value, numeric?]; a numeric value is written in full (the tests read it back).
TG.table = function (rows) {
  const table = TG.el("table");
  for (const [key, label, value, numeric] of rows) {
    const tr = TG.el("tr", { "data-key": key });
    tr.appendChild(TG.el("td", {}, label));
    tr.appendChild(TG.el("td", numeric ? { class: "num" } : {}, numeric ? TG.full(value) : value));
    table.appendChild(tr);
  }
  return table;
};
TG.showTip = function (event, heading, rows) {
  TG.tip.replaceChildren(TG.el("b", {}, heading), TG.table(rows));
  TG.tip.style.display = "block";
  const x = Math.min(event.clientX + 14, window.innerWidth - TG.tip.offsetWidth - 4);
  const y = Math.min(event.clientY + 14, window.innerHeight - TG.tip.offsetHeight - 4);
  TG.tip.style.left = x + "px";
  TG.tip.style.top = y + "px";
};
TG.hideTip = () => { TG.tip.style.display = "none"; };
TG.hoverable = function (element, describe) {
  element.addEventListener("mouseenter", (event) => { const [h, rows] = describe(); TG.showTip(event, h, rows); });
  element.addEventListener("mousemove", (event) => { if (TG.tip.style.display === "block") {
    TG.tip.style.left = Math.min(event.clientX + 14, window.innerWidth - TG.tip.offsetWidth - 4) + "px";
    TG.tip.style.top = Math.min(event.clientY + 14, window.innerHeight - TG.tip.offsetHeight - 4) + "px"; } });
  element.addEventListener("mouseleave", TG.hideTip);
};
TG.setInfo = function (heading, sections) {
  const parts = [TG.el("h2", {}, heading)];
  for (const [title, rows] of sections) {
    if (title) parts.push(TG.el("h2", {}, title));
    parts.push(TG.table(rows));
  }
  TG.info.replaceChildren(...parts);
};

// ---- pan and zoom: one transform on the world group -----------------------------------------------
const view = { x: 20, y: 20, k: 1 };
TG.applyView = () => TG.world.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
TG.canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  const r = TG.canvas.getBoundingClientRect();
  const mx = event.clientX - r.left, my = event.clientY - r.top;
  const k = Math.max(0.02, Math.min(8, view.k * Math.exp(-event.deltaY * 0.0015)));
  view.x = mx - ((mx - view.x) * k) / view.k;
  view.y = my - ((my - view.y) * k) / view.k;
  view.k = k;
  TG.applyView();
}, { passive: false });
let drag = null;
TG.canvas.addEventListener("mousedown", (event) => {
  drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y, moved: false };
});
window.addEventListener("mousemove", (event) => {
  if (!drag) return;
  const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 4) { drag.moved = true; TG.canvas.classList.add("dragging"); }
  if (drag.moved) { view.x = drag.vx + dx; view.y = drag.vy + dy; TG.applyView(); }
});
window.addEventListener("mouseup", () => {
  if (drag && drag.moved) {  // a drag is not a click on what it started on
    window.addEventListener("click", (e) => e.stopPropagation(), { capture: true, once: true });
  }
  drag = null;
  TG.canvas.classList.remove("dragging");
});
// Fit the whole drawing, but never so small that its text cannot be read: then start at its left end.
TG.fit = function (least) {
  const box = TG.world.getBBox();
  const W = TG.canvas.clientWidth, H = TG.canvas.clientHeight;
  let k = Math.min((W - 40) / Math.max(box.width, 1), (H - 40) / Math.max(box.height, 1), 1.5);
  if (least && k < least) k = least;
  view.k = k;
  view.x = box.width * k < W ? (W - box.width * k) / 2 - box.x * k : 20 - box.x * k;
  view.y = box.height * k < H ? (H - box.height * k) / 2 - box.y * k : 20 - box.y * k;
  TG.applyView();
};
TG.centreOn = function (x, y) {
  view.k = Math.max(view.k, 0.8);
  view.x = TG.canvas.clientWidth / 2 - x * view.k;
  view.y = TG.canvas.clientHeight / 2 - y * view.k;
  TG.applyView();
};
document.getElementById("fit").addEventListener("click", () => TG.fit(0));

// ---- views and search -----------------------------------------------------------------------------
TG.views = {};  // name -> {draw(), search(query) -> [[label, action]], available}
TG.current = null;
TG.show = function (name) {
  TG.current = name;
  for (const button of tabs.children) button.classList.toggle("on", button.dataset.view === name);
  TG.hideTip();
  TG.info.replaceChildren();
  TG.film.classList.remove("on");
  TG.views[name].draw();
  TG.fit(0.7);
  TG.runSearch();
};
TG.runSearch = function () {
  const query = TG.search.value.trim().toLowerCase();
  const found = query && TG.views[TG.current].search ? TG.views[TG.current].search(query) : [];
  TG.results.replaceChildren();
  if (!query) return;
  TG.results.appendChild(TG.el("h2", {}, `${found.length} found` + (found.length > 40 ? " (first 40 listed)" : "")));
  for (const [label, action] of found.slice(0, 40)) {
    const button = TG.el("button", { class: "result" }, label);
    button.addEventListener("click", action);
    TG.results.appendChild(button);
  }
};
TG.search.addEventListener("input", TG.runSearch);

TG.start = function () {
  if (D.svg !== undefined) {
    for (const id of ["expand-all", "collapse-all"]) document.getElementById(id).remove();
    TG.views.picture.draw();
    TG.fit(0);
    document.body.dataset.ready = "1";
    return;
  }
  for (const [name, label] of [["ops", "op view"], ["steps", "step view"], ["lags", "lag view"]]) {
    const button = TG.el("button", { "data-view": name }, label);
    button.disabled = !TG.views[name].available;
    button.addEventListener("click", () => TG.show(name));
    tabs.appendChild(button);
  }
  TG.show(D.view || "ops");
  if (D.select !== null && D.select !== undefined) TG.views.ops.reveal(D.select);
  document.body.dataset.ready = "1";
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // since navigation began
};
