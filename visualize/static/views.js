// tinygrad_rnn page, part 3 of 3: the step view (with a Monitor's history, a filmstrip over training
// iterations), the lag view, and any picture's own SVG. Numbers and colours are the step view's and the
// lag view's, made in Python (visualize/page.py); this file only places them.
"use strict";
(function () {
  const S = TG.DATA.steps, L = TG.DATA.lags, M = TG.DATA.monitor;
  const PER = 25, BW = 66, BH = 44, CW = 128, RY = 96;

  // ---- step view --------------------------------------------------------------------------------------
  // Rows of PER steps as step_view draws them: row r holds s_(r*PER+1) .. s_((r+1)*PER) after a faint copy
  // of the state that ends the row before.
  const at = (t) => { const r = t === 0 ? 0 : Math.floor((t - 1) / PER); return [(t - r * PER) * CW, r * RY]; };
  function drawSteps(frame) {
    const world = TG.world;
    world.replaceChildren();
    TG.canvas.classList.remove("pathing");
    const film = frame !== null && frame < M.step_grad_norms.length;
    const norms = film ? M.step_grad_norms[frame] || [] : S.rows.map((r) => r.grad_norm);
    const fills = film ? M.fills[frame] || [] : S.rows.map((r) => r.fill);
    const T = norms.length - 1;
    const edges = TG.svg("g", {}, null, world), nodes = TG.svg("g", {}, null, world);
    for (let t = 1; t <= T; t++) {
      const [x2, y2] = at(t);
      let [x1, y1] = at(t - 1);
      if (t > 1 && (t - 1) % PER === 0) {  // the row's first edge leaves a copy of the last state
        [x1, y1] = [0, y2];
        const ghost = TG.svg("g", { transform: `translate(${x1},${y1})` }, null, nodes);
        TG.svg("rect", { width: BW, height: BH, rx: 6, fill: "white", stroke: "#c8c8c8", "stroke-dasharray": "3 2" }, null, ghost);
        TG.svg("text", { x: 8, y: 26, class: "muted" }, `${TG.clip(S.letter, 8)}${t - 1} ↩`, ghost);
      }
      const row = S.rows[t], d = `M${x1 + BW},${y1 + BH / 2}L${x2},${y2 + BH / 2}`;
      const hit = TG.svg("path", { class: "hit", d, "data-step-edge": t }, null, edges);
      const line = TG.svg("path", { class: "edge", d }, null, edges);
      if (film || !row) {
        line.setAttribute("stroke", "#b8b8b8");
      } else {
        line.setAttribute("stroke", row.colour);
        line.setAttribute("stroke-width", row.width);
        if (row.cut) line.setAttribute("stroke-dasharray", "2 3");
        const mid = (x1 + BW + x2) / 2;
        TG.svg("text", { x: mid, y: y2 + BH / 2 - 6, "text-anchor": "middle", class: "head" }, row.cut ? "cut" : TG.short(row.gain, 2), edges);
        TG.svg("text", { x: mid, y: y2 + BH / 2 + 13, "text-anchor": "middle", class: "muted" }, "≤" + TG.short(row.bound, 2), edges);
        TG.hoverable(hit, () => [`step ${t}: s${t - 1} → s${t}`, [
          ["gain", "gain ‖J_tᵀ δ_t‖ / ‖δ_t‖", row.gain, true], ["bound", "bound ‖J_t‖₂", row.bound, true],
          ["bound_method", "bound over", row.bound_method === "rows" ? "the largest batch row" : "the whole batch"],
          ["contribution", "‖C_t‖ to the weights", row.contribution, true],
          ["cut", "cut", row.cut ? "detached: no gradient crosses" : "no"]]]);
      }
    }
    for (let t = 0; t <= T; t++) {
      const [x, y] = at(t);
      const g = TG.svg("g", { class: "snode", "data-state": t, "data-norm": TG.full(norms[t]), transform: `translate(${x},${y})` }, null, nodes);
      TG.svg("rect", { width: BW, height: BH, rx: 6, fill: fills[t] || "white", stroke: "#9aa5b5" }, null, g);
      TG.svg("text", { x: 8, y: 17, class: "head" }, `${TG.clip(S.letter, 8)}${t}`, g);
      TG.svg("text", { x: 8, y: 33 }, TG.short(norms[t], 2), g);
      const row = S.rows[t];
      if (!film && row && row.clip && row.clip.fired) TG.svg("text", { x: 44, y: 17, class: "exploding" }, "✂", g);
      g.addEventListener("click", (event) => {
        event.stopPropagation();
        const rows = [["grad_norm", "‖δ_t‖", norms[t], true]];
        if (!film && row) {
          rows.push(["direct", "‖d_t‖ read directly", row.direct, true], ["last_read", "last read alone", row.last_read, true]);
          if (row.clip) rows.push(["clip", "clip hook", `${row.clip.norm_before} → ${row.clip.norm_after} (${row.clip.fired ? "fired" : "did not fire"})`]);
        }
        TG.setInfo(`${S.state.replace(/_t/g, "_" + t)}`, [[film ? `iteration ${frame}` : null, rows]]);
      });
    }
  }
  function stepCaption(frame) {
    const film = frame !== null && frame < M.step_grad_norms.length;
    TG.setLegend([
      "Edge label: gain_t = ‖J_tᵀ δ_t‖ / ‖δ_t‖, what step t did to the gradient that crossed it; small ≤: the bound ‖J_t‖₂. Colour: gain_t compounded over the drawn length (blue shrinks, red grows).",
      "Node: ‖δ_t‖, the gradient that reached s_t from outside step t, shaded light (small) to dark (large).",
      M ? "The slider runs over the Monitor's training iterations: the nodes show each iteration's ‖δ_t‖, all iterations on one shade scale." : "",
    ], [["edge colour: gain_t compounded over the drawn length", S.gain_key],
        [film ? "node shade: ‖δ_t‖ over the Monitor's iterations" : "node shade: ‖δ_t‖", film ? M.norm_key : S.norm_key]]);
    if (film) {
      TG.setCaption(`step view, training iteration ${frame} of ${M.losses.length - 1} · loss ${TG.short(M.losses[frame], 4)} · ` +
        "nodes: ‖δ_t‖ as the Monitor kept it (it keeps no gains, so the edges are grey); the slider's right end is the graph this page was made from");
      TG.frameLabel.textContent = `${frame} · loss ${TG.short(M.losses[frame], 4)}`;
    } else {
      TG.setCaption(S.headline + (S.story ? "\n" + S.story : ""));
      TG.frameLabel.textContent = M ? "the graph given" : "";
    }
  }
  TG.frame.addEventListener("input", () => {
    const f = +TG.frame.value;
    const frame = f >= M.losses.length ? null : f;
    drawSteps(frame);
    stepCaption(frame);
  });
  TG.views.steps = {
    available: !!S,
    draw() {
      let frame = null;
      if (M) {
        TG.film.classList.add("on");
        TG.frame.max = String(M.losses.length);
        TG.frame.value = String(M.losses.length);
      }
      drawSteps(frame);
      stepCaption(frame);
    },
    search(query) {
      return S.rows.filter((r) => `${S.letter}${r.t}`.toLowerCase().includes(query) || String(r.t) === query)
        .map((r) => [`${S.letter}${r.t}`, () => { const [x, y] = at(r.t); TG.centreOn(x + BW / 2, y + BH / 2); }]);
    },
  };

  // ---- lag view ---------------------------------------------------------------------------------------
  function drawLags() {
    const world = TG.world;
    world.replaceChildren();
    TG.canvas.classList.remove("pathing");
    const columns = L.matrix.length ? L.matrix[0].length : 0;
    const cell = Math.max(4, Math.min(26, Math.floor(700 / Math.max(columns, 1))));
    const left = 130, top = 24;
    TG.svg("text", { x: 0, y: 12, class: "head" }, "share of each loss's gradient that reaches s_k", world);
    L.rows.forEach((i, r) => {
      TG.svg("text", { x: left - 6, y: top + r * (cell + 1) + cell / 2 + 3, "text-anchor": "end" }, TG.clip(L.names[r], 22), world);
      L.shares[r].forEach((share, k) => {
        if (share === 0) return;
        const rect = TG.svg("rect", { x: left + k * (cell + 1), y: top + r * (cell + 1), width: cell, height: cell,
          fill: L.colours[r][k] || "white", "data-cell": `${r},${k}` }, null, world);
        TG.hoverable(rect, () => [`${L.names[r]} → s${k}`, [["share", "share ‖δ_k⁽ⁱ⁾‖ / ‖δ_tᵢ⁽ⁱ⁾‖", share, true],
          ["norm", "‖δ_k⁽ⁱ⁾‖", L.matrix[i][k], true]]]);
      });
    });
    const every = columns <= 26 ? 1 : Math.max(1, Math.round(columns / 10));
    const below = top + L.rows.length * (cell + 1) + 14;
    for (let k = 0; k < columns; k += every) TG.svg("text", { x: left + k * (cell + 1), y: below, class: "muted" }, k, world);
    // The reach curve: bars down from the line for a share below 1, up for one above (lag_view's scale).
    const base = below + 40 + 60, curveTop = below + 24;
    TG.svg("text", { x: 0, y: curveTop, class: "head" }, "reach: the median share that arrives lag steps back", world);
    TG.svg("line", { x1: left, x2: left + L.reach.length * (cell + 1), y1: base, y2: base, stroke: "#303030" }, null, world);
    L.reach.forEach((r, lag) => {
      const s = L.scale[lag], h = Math.max(1, Math.abs(s) * 60);
      const bar = TG.svg("rect", { x: left + lag * (cell + 1), y: s > 0 ? base - h : base, width: cell, height: r === null ? 0 : h,
        fill: L.reach_colours[lag] || "#ffffff", "data-lag": lag, opacity: L.reach_counts[lag] < 3 ? 0.45 : 1 }, null, world);
      TG.hoverable(bar, () => [`lag ${lag}`, [["reach", "median share", r, true], ["count", "losses that reach it", L.reach_counts[lag], true]]]);
    });
    for (let k = 0; k < L.reach.length; k += every) TG.svg("text", { x: left + k * (cell + 1), y: base + 76, class: "muted" }, k, world);
    TG.svg("text", { x: left - 6, y: base + 76, "text-anchor": "end", class: "muted" }, "lag", world);
  }
  TG.views.lags = {
    available: !!L,
    draw() {
      drawLags();
      const far = L.headline_lag;
      TG.setCaption(`lag view · ${L.rows.length} loss${L.rows.length === 1 ? "" : "es"} over ${(L.matrix[0] || [0]).length - 1} steps · ` +
        `median reach ${far} steps back (the longest lag half the losses reach): ${TG.short(L.reach[far], 2)}`);
      TG.setLegend([
        "Cell [i, k]: the share of loss i's gradient that reaches s_k, ‖δ_k⁽ⁱ⁾‖ / ‖δ_tᵢ⁽ⁱ⁾‖ (1 where the loss reads its last state), on a log colour scale of ±" + L.decades + " decades.",
        "Reach at lag ℓ: the median over losses of the share ℓ steps back; a pale bar rests on fewer than 3 losses.",
      ], [["cell and bar colour: a share of a loss's gradient", L.key]]);
    },
    search(query) {
      return L.names.map((name, r) => [name, r]).filter(([name]) => name.toLowerCase().includes(query))
        .map(([name, r]) => [name, () => TG.centreOn(300, 24 + r * 10)]);
    },
  };

  // ---- any picture's own SVG (render(digraph, "x.html")) ------------------------------------------------
  TG.views.picture = {
    draw() {
      const D = TG.DATA;
      if (!D.svg) {
        TG.setCaption(D.error || "no picture");
        TG.info.replaceChildren(TG.el("pre", {}, D.source || ""));
        return;
      }
      const parsed = new DOMParser().parseFromString(D.svg, "image/svg+xml").documentElement;
      parsed.querySelectorAll("script, foreignObject").forEach((n) => n.remove());
      TG.world.replaceChildren(document.importNode(parsed, true));
      TG.setCaption("the picture as Graphviz drew it · drag to pan, wheel to zoom, hover for the tooltips, search to find a label");
    },
    search(query) {
      const found = [];
      for (const g of TG.world.querySelectorAll("g.node, g.edge")) {
        const words = [...g.querySelectorAll("text")].map((t) => t.textContent).join(" ");  // not the <title> id
        const hit = words.toLowerCase().includes(query);
        for (const shape of g.querySelectorAll("polygon, ellipse, path")) shape.style.strokeWidth = hit ? "4" : "";
        if (hit) {
          found.push([TG.clip(words.trim().replace(/\s+/g, " "), 60), () => {
            const box = g.getBBox(), m = g.getCTM(), w = TG.world.getCTM().inverse().multiply(m);
            TG.centreOn(w.a * (box.x + box.width / 2) + w.e, w.d * (box.y + box.height / 2) + w.f);
          }]);
        }
      }
      return found;
    },
  };
  if (TG.DATA.svg !== undefined) TG.current = "picture";
  TG.start();
})();
