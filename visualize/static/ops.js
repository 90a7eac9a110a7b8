// tinygrad_rnn page, part 2 of 3: the op view. Every value of the recorded graph, each time step one box
// that opens on a click; an edge's numbers are export.graph_dict's, its colour the op view's. A click on
// a value highlights every path from it to the loss with the path view's products
// (path_view.path_products, multiplied here edge by edge in the same order, so the floats agree).
"use strict";
(function () {
  if (!TG.DATA.graph) return;  // a picture's page (render(digraph, "x.html")) has only its SVG
  const G = TG.DATA.graph;
  const N = G.nodes, E = G.edges;
  const STEPS = TG.DATA.steps;
  const NW = 124, NH = 34, CW = 180, RH = 46, PAD = 14, HEAD = 24, GAP = 34, STACK = 6;
  const CLOSED_W = 72, CLOSED_H = 46;

  // Groups: a time step's nodes ("t3"), what comes before the unroll (weights, inputs: "before") and
  // what is computed from the steps (the loss: "after").
  const group = new Array(N.length);
  for (const node of N) group[node.id] = node.box !== null ? "b" + node.box : "before";
  const inEdges = N.map(() => []), outEdges = N.map(() => []);
  E.forEach((e, i) => { inEdges[e.child].push(i); outEdges[e.parent].push(i); });
  for (const node of N) {  // ids are topological: parents come first
    if (group[node.id] === "before" && inEdges[node.id].some((i) => group[E[i].parent] !== "before")) {
      group[node.id] = "after";
    }
  }
  // One box per time step (page.py lists them: an unroll's prefix, then t), shown by its index.
  const BOXES = G.boxes, steps = BOXES.map((_, i) => i);
  const onePrefix = BOXES.every((b) => b.prefix === (BOXES[0] || {}).prefix);
  const stepRow = (i) => {  // the step view's row for box i, when the boxes are the states' steps
    const t = BOXES[i].t, rows = STEPS ? STEPS.rows : [];
    return onePrefix && rows[t] && rows[t].t === t ? rows[t] : null;
  };
  const stepName = (i) => (BOXES[i].prefix ? `${BOXES[i].prefix}/t=${BOXES[i].t}` : String(BOXES[i].t));
  const boxName = (i) => (BOXES[i].prefix ? `${TG.clip(BOXES[i].prefix, 16)} · ` : "") + `t = ${BOXES[i].t}`;

  // Inside a group, a node's column is its longest path from the group's inputs; a column taller than
  // STACK nodes wraps into the next.
  const layouts = {};
  function layoutOf(g) {
    if (layouts[g]) return layouts[g];
    const rank = {}, columns = [];
    for (const node of N) {
      if (group[node.id] !== g) continue;
      let r = 0;
      for (const i of inEdges[node.id]) if (group[E[i].parent] === g) r = Math.max(r, rank[E[i].parent] + 1);
      rank[node.id] = r;
      (columns[r] = columns[r] || []).push(node.id);
    }
    const pos = {};
    let col = 0, tallest = 0;
    for (const members of columns) {
      if (!members) continue;
      members.forEach((id, k) => { pos[id] = [(col + Math.floor(k / STACK)) * CW, (k % STACK) * RH]; });
      col += Math.ceil(members.length / STACK);
      tallest = Math.max(tallest, Math.min(members.length, STACK));
    }
    return (layouts[g] = { pos, w: Math.max(col * CW - (CW - NW), 0), h: Math.max(tallest * RH - (RH - NH), 0) });
  }

  const open = new Set();
  let where = {};  // item ("n12", "s3") -> {x, y, w, h}
  let selected = null, products = null;
  let matches = new Set();

  function place() {
    where = {};
    const band = layoutOf("before");
    for (const [id, [x, y]] of Object.entries(band.pos)) where["n" + id] = { x, y, w: NW, h: NH };
    const y0 = band.h ? band.h + 60 : 0;
    let x = 0;
    for (const t of steps) {
      if (open.has(t)) {
        const L = layoutOf("b" + t);
        where["s" + t] = { x, y: y0, w: L.w + 2 * PAD, h: L.h + HEAD + PAD };
        for (const [id, [nx, ny]] of Object.entries(L.pos)) where["n" + id] = { x: x + PAD + nx, y: y0 + HEAD + ny, w: NW, h: NH };
      } else {
        where["s" + t] = { x, y: y0, w: CLOSED_W, h: CLOSED_H };
      }
      x += where["s" + t].w + GAP;
    }
    const after = layoutOf("after");
    for (const [id, [nx, ny]] of Object.entries(after.pos)) where["n" + id] = { x: x + nx, y: y0 + HEAD + ny, w: NW, h: NH };
    bus = Math.max(y0 + HEAD + after.h, ...steps.map((t) => where["s" + t].y + where["s" + t].h)) + 18;
  }
  let bus = 0;  // below the row of steps: where an edge from a step to the loss's ops runs
  const itemOf = (id) => (N[id].box !== null && !open.has(N[id].box) ? "s" + N[id].box : "n" + id);

  // Straight, except from a step to an op of the loss far to its right: that edge would cross every step
  // in between, so it drops to a line under the row and rises to its op. Returns [path, label x, label y].
  function route(a, b) {
    const A = where[a], B = where[b];
    const fromStep = a[0] === "s" || N[+a.slice(1)].box !== null;
    if (fromStep && b[0] === "n" && group[+b.slice(1)] === "after" && B.x > A.x + A.w + 2 * GAP) {
      const x1 = A.x + A.w / 2, x2 = B.x + B.w / 2;
      return [`M${x1},${A.y + A.h}V${bus}H${x2}V${B.y + B.h}`, null, null];
    }
    const [x1, y1, x2, y2] = line(A, B);
    return [`M${x1},${y1}L${x2},${y2}`, (x1 + x2) / 2, (y1 + y2) / 2 - 4, Math.hypot(x2 - x1, y2 - y1)];
  }
  function line(A, B) {
    if (B.y > A.y + A.h) return [A.x + A.w / 2, A.y + A.h, B.x + B.w / 2, B.y];
    if (A.y > B.y + B.h) return [A.x + A.w / 2, A.y, B.x + B.w / 2, B.y + B.h];
    if (B.x >= A.x + A.w) return [A.x + A.w, A.y + A.h / 2, B.x, B.y + B.h / 2];
    return [A.x, A.y + A.h / 2, B.x + B.w, B.y + B.h / 2];
  }

  // ---- drawing --------------------------------------------------------------------------------------
  function draw() {
    place();
    const world = TG.world;
    world.replaceChildren();
    TG.canvas.classList.toggle("pathing", products !== null);
    const boxes = TG.svg("g", {}, null, world), edges = TG.svg("g", {}, null, world), nodes = TG.svg("g", {}, null, world);
    for (const t of steps) drawStep(boxes, t);
    const joined = new Map();  // the op edges behind each drawn edge
    E.forEach((e, i) => {
      const a = itemOf(e.parent), b = itemOf(e.child);
      // A weight feeds every step: its edges into closed steps would be a fan of hundreds of lines.
      if (a === b || (b[0] === "s" && group[e.parent] === "before")) return;
      const key = a + ">" + b;
      if (!joined.has(key)) joined.set(key, []);
      joined.get(key).push(i);
    });
    for (const [key, ids] of joined) drawEdge(edges, key, ids);
    for (const node of N) if (where["n" + node.id]) drawNode(nodes, node);
  }

  function drawStep(layer, t) {
    const box = where["s" + t], row = stepRow(t), isOpen = open.has(t);
    const g = TG.svg("g", { class: "step", "data-step": stepName(t), transform: `translate(${box.x},${box.y})` }, null, layer);
    const members = N.filter((n) => n.box === t);
    if (products && members.some((n) => products.values.has(n.id))) g.classList.add("onpath");
    if (members.some((n) => matches.has(n.id))) g.classList.add("match");
    const rect = TG.svg("rect", { class: "box" + (isOpen ? " expanded" : ""), width: box.w, height: box.h, rx: 6 }, null, g);
    if (!isOpen && row && row.fill) rect.style.fill = row.fill;
    TG.svg("text", { x: 6, y: 15, class: "head" }, (isOpen ? boxName(t) + "  ▾ close" : `t = ${BOXES[t].t}`), g);
    if (!isOpen) {
      TG.svg("text", { x: 6, y: 30 }, row ? "‖δ‖ " + TG.short(row.grad_norm, 2) : `${members.length} values`, g);
      TG.svg("title", {}, `${boxName(t)}: ${members.length} values; click to open`, g);
    }
    const toggle = (event) => {
      event.stopPropagation();
      if (open.has(t)) open.delete(t); else open.add(t);
      draw();
      const opened = where["s" + t];  // bring the step into view: its left end, or its middle if it fits
      TG.centreOn(opened.x + Math.min(opened.w, TG.canvas.clientWidth / 0.8 - 40) / 2, opened.y + opened.h / 2);
    };
    (isOpen ? TG.svg("rect", { width: box.w, height: HEAD, fill: "transparent" }, null, g) : g).addEventListener("click", toggle);
  }

  function drawEdge(layer, key, ids) {
    const [a, b] = key.split(">");
    const [d, labelX, labelY, length] = route(a, b);
    const single = a[0] === "n" && b[0] === "n" && ids.length === 1 ? E[ids[0]] : null;
    const hit = TG.svg("path", { class: "hit", d }, null, layer);
    const line = TG.svg("path", { class: "edge", d }, null, layer);
    const onPath = products && ids.some((i) => products.edges.has(i));
    if (onPath) line.classList.add("onpath");
    let label = null;
    if (single) {
      hit.setAttribute("data-edge", ids[0]);
      line.setAttribute("stroke", single.colour);
      line.setAttribute("stroke-width", single.width);
      if (!N[single.parent].requires_grad) line.setAttribute("stroke-dasharray", "4 3");
      label = single.derivative !== null ? TG.short(single.derivative, 3)
        : "‖J‖ " + TG.short(single.jacobian_norm, 3) + (single.observed_gain !== null ? " · " + TG.short(single.observed_gain, 2) : "");
      TG.hoverable(hit, () => describeEdge(ids[0]));
    } else {
      const named = (item) => (item[0] === "s" ? stepName(+item.slice(1)) : "v" + item.slice(1));
      hit.setAttribute("data-joined", named(a) + ">" + named(b));
      const ta = a[0] === "s" ? +a.slice(1) : null, tb = b[0] === "s" ? +b.slice(1) : null;
      const row = ta !== null && tb !== null && BOXES[tb].t === BOXES[ta].t + 1 ? stepRow(tb) : null;
      if (row && row.colour) {
        line.setAttribute("stroke", row.colour);
        line.setAttribute("stroke-width", row.width);
        label = row.cut ? "cut" : TG.short(row.gain, 2);
      } else {
        line.setAttribute("stroke", a[0] === "n" && group[+a.slice(1)] === "before" ? "#e2e2e2" : "#b8b8b8");
        line.setAttribute("stroke-width", 0.8);
      }
      TG.hoverable(hit, () => describeJoined(a, b, ids, row));
    }
    // A label wider than its edge would lie on the boxes: hover the edge instead.
    if (label !== null && labelX !== null && length > 6 * label.length) {
      TG.svg("text", { x: labelX, y: labelY, "text-anchor": "middle", class: "muted" }, label, layer);
    }
  }

  function drawNode(layer, node) {
    const box = where["n" + node.id];
    const kind = node.op === null ? (node.requires_grad ? " param" : " const") : "";
    const g = TG.svg("g", { class: "node" + kind, "data-node": node.id, transform: `translate(${box.x},${box.y})` }, null, layer);
    if (selected === node.id) g.classList.add("selected");
    if (matches.has(node.id)) g.classList.add("match");
    TG.svg("rect", { width: NW, height: NH, rx: 5 }, null, g);
    TG.svg("text", { x: 6, y: 14, class: "head" }, TG.clip(node.label || (node.op === null ? "leaf" : "value"), 20), g);
    TG.svg("text", { x: 6, y: 27, class: "muted" }, TG.clip(TG.shapeText(node.shape) + (node.op ? " · " + node.op : ""), 24), g);
    TG.svg("title", {}, (node.name || node.label || "") + (node.scope ? "  [" + node.scope + "]" : ""), g);
    if (products && products.values.has(node.id)) {
      g.classList.add("onpath");
      const [text, flag] = annotation(node.id);
      const product = TG.svg("text", { x: 2, y: NH + 11, class: "product" + (flag ? " " + flag : "") }, text, g);
      product.setAttribute("data-product", TG.full(productAt(node.id)));
    }
    g.addEventListener("click", (event) => { event.stopPropagation(); select(node.id); });
  }

  // ---- what the tip and the panel say ---------------------------------------------------------------
  function describeEdge(i) {
    const e = E[i], child = N[e.child], parent = N[e.parent];
    return [`∂ ${child.op} / ∂ input ${e.position}`, [
      ["derivative", "local derivative", e.derivative, true],
      ["jacobian_norm", "‖J‖ (spectral norm)", e.jacobian_norm, true],
      ["observed_gain", "observed gain", e.observed_gain, true],
      ["parent_shape", "from (parent)", `${parent.label || parent.op || "leaf"}: ${TG.shapeText(parent.shape)}`],
      ["child_shape", "to (child)", `${child.label || child.op}: ${TG.shapeText(child.shape)}`],
      ["tip", "op view", e.tip],
    ]];
  }
  function describeJoined(a, b, ids, row) {
    const name = (item) => (item[0] === "s" ? boxName(+item.slice(1)) : (N[+item.slice(1)].label || "value"));
    const rows = [["edges", "op edges inside", ids.length, true]];
    if (row) {
      rows.push(["gain", "gain (step view)", row.gain, true], ["bound", "bound ‖J_t‖₂", row.bound, true],
                ["contribution", "‖C_t‖ to the weights", row.contribution, true]);
      if (row.cut) rows.push(["cut", "cut", "detached: no gradient crosses"]);
    }
    return [`${name(a)} → ${name(b)}`, rows];
  }
  function arrayText(array, summary) {
    if (summary === null) return [["none", "", "none"]];
    const rows = [["min", "min", summary.min, true], ["max", "max", summary.max, true],
                  ["mean", "mean", summary.mean, true], ["norm", "norm", summary.norm, true]];
    if (array !== null && typeof array === "object") rows.push(["values", "values", JSON.stringify(array)]);
    if (typeof array === "number") rows.unshift(["value", "value", array, true]);
    return rows;
  }
  function select(id) {
    selected = id;
    products = pathProducts(id);
    const node = N[id];
    const sections = [[null, [
      ["name", "name", node.name === null ? "–" : node.name], ["op", "op", node.op_repr || "leaf"],
      ["scope", "scope", node.scope || "–"], ["time_step", "time step", node.time_step === null ? "–" : node.time_step],
      ["shape", "shape", TG.shapeText(node.shape)], ["requires_grad", "requires grad", String(node.requires_grad)],
    ]], ["value", arrayText(node.data, node.data_summary).map(([k, l, v, n]) => ["data_" + k, l, v, n])],
    ["gradient", arrayText(node.grad, node.grad_summary).map(([k, l, v, n]) => ["grad_" + k, l, v, n])]];
    if (node.clip) sections.push(["clip hook", [["clip", "norm before → after", `${node.clip.norm_before} → ${node.clip.norm_after}`]]]);
    if (node.cut) sections.push(["cut", [["cut", "detached", "the graph was cut here (truncated BPTT)"]]]);
    const outs = [...products.values.keys()].filter((n) => products.outputs.has(n));
    sections.push([`paths to the output (${products.values.size} values, ${products.edges.size} edges)`,
      [["exact", "numbers", products.exact ? "exact ∂/∂source (all edges scalar)" : "‖∂/∂source‖ ≤ the sum over paths of products of ‖J‖"],
       ...outs.map((n) => ["at_output", `at ${N[n].label || "output"}`, annotation(n)[0]])]]);
    TG.setInfo(node.label || node.op || "value", sections);
    draw();
  }

  // path_view.path_products, in graph_dict's edge order (the walk's): the same sums in the same order.
  function pathProducts(source) {
    const reached = new Set([source]), edges = [];
    E.forEach((e, i) => { if (reached.has(e.parent)) { reached.add(e.child); edges.push(i); } });
    const exact = edges.every((i) => TG.size(N[E[i].child].shape) === 1 && TG.size(N[E[i].parent].shape) === 1);
    const values = new Map([[source, 1.0]]);
    const num = (x) => (x === null ? NaN : x);
    for (const i of edges) {
      const e = E[i], factor = exact ? num(e.derivative) : num(e.jacobian_norm);
      values.set(e.child, (values.has(e.child) ? values.get(e.child) : 0.0) + values.get(e.parent) * factor);
    }
    const leaving = new Set(edges.map((i) => E[i].parent));
    const outputs = new Set([...values.keys()].filter((n) => TG.size(N[n].shape) === 1 && !leaving.has(n)));
    return { source, values, exact, edges: new Set(edges), outputs };
  }
  // The number the path view writes on a node: on a one-number output of a tensor graph the exact norm
  // (made in Python for the leaves that learn), elsewhere the product or the bound.
  function productAt(id) {
    if (id !== products.source && products.outputs.has(id) && !products.exact) {
      const exact = G.exact_norms[products.source + ":" + id];
      if (exact !== undefined) return exact;
    }
    return products.values.get(id);
  }
  function annotation(id) {
    const src = N[products.source].label || "source";
    if (id === products.source) return ["source", null];
    const value = productAt(id);
    const exactNorm = !products.exact && products.outputs.has(id) && G.exact_norms[products.source + ":" + id] !== undefined;
    let text;
    if (products.exact && !products.outputs.has(id)) text = `∂/∂${src} = ${TG.short(value, 4)}`;
    else if (products.exact || exactNorm) text = `${products.exact ? "∂" : "‖∂"}/∂${src}${products.exact ? "" : "‖"} = ${TG.short(value, 4)}`;
    else text = value !== 0 ? `‖∂/∂${src}‖ ≤ ${TG.short(value, 3)}` : `∂/∂${src} = 0`;
    let flag = null;
    if (value !== 0 && !Number.isNaN(value)) {
      if (Math.abs(value) < 1e-3) { text += " ▼ vanishing"; flag = "vanishing"; }
      else if (Math.abs(value) > 1e3 && (products.exact || exactNorm)) { text += " ▲ exploding"; flag = "exploding"; }
    }
    return [TG.clip(text, 40), flag];
  }

  function reveal(id) {
    if (N[id].box !== null) open.add(N[id].box);
    if (TG.current !== "ops") TG.show("ops");
    select(id);
    const box = where["n" + id];
    TG.centreOn(box.x + NW / 2, box.y + NH / 2);
  }

  function search(query) {
    const found = N.filter((n) => [n.name, n.label, n.op, n.scope].some((s) => s && String(s).toLowerCase().includes(query)));
    const rank = (n) => { const name = String(n.name || n.label || "").toLowerCase(); return name === query ? 0 : name.startsWith(query) ? 1 : 2; };
    found.sort((a, b) => rank(a) - rank(b));  // a value named exactly so first; otherwise in graph order
    matches = new Set(found.map((n) => n.id));
    draw();
    return found.map((n) => [`${n.label || n.op || "leaf"}${n.time_step !== null ? "  (t = " + n.time_step + ")" : ""}`,
      () => reveal(n.id)]);
  }

  document.getElementById("expand-all").addEventListener("click", () => { if (TG.current === "ops") { steps.forEach((t) => open.add(t)); draw(); TG.fit(0.3); } });
  document.getElementById("collapse-all").addEventListener("click", () => { if (TG.current === "ops") { open.clear(); draw(); TG.fit(0.7); } });
  const clear = () => { if (TG.current === "ops" && products) { products = null; selected = null; draw(); } };
  TG.canvas.addEventListener("click", clear);  // a click on the background, or Escape, ends the highlight
  window.addEventListener("keydown", (event) => { if (event.key === "Escape") clear(); });

  TG.views.ops = {
    available: true, search, reveal,
    draw() {
      matches = new Set();
      draw();
      TG.setCaption(`op view · ${N.length} values, ${E.length} edges` + (steps.length ? ` · ${steps.length} time steps, each one box: click a box to open it` : "")
        + " · hover an edge for its numbers, click a value for its numbers and its paths to the output");
      TG.setLegend([
        "Scalar edge: the exact local derivative d(child)/d(parent). Tensor edge: ‖J‖, the spectral norm of the local Jacobian (the most it can stretch a gradient), and after backward the observed gain ‖gradient to parent‖ / ‖gradient of child‖.",
        "Colour and width on a log scale: blue shrinks a gradient, grey about 1, red amplifies. A closed step's box is shaded by ‖δ_t‖ and the edge between two closed steps carries the step view's gain; the weights' edges into a step are drawn when it opens.",
        "Path numbers (path view): on a scalar graph d node / d source summed over paths; on a tensor graph a bound, the sum over paths of the products of ‖J‖, and on the loss the exact ‖d loss / d source‖ for a weight or input.",
      ], [["edge colour: the derivative, else the observed gain, else ‖J‖", G.key],
          ...(STEPS ? [["closed step's shade: ‖δ_t‖", STEPS.norm_key]] : [])]);
    },
  };
})();
