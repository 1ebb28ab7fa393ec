// Drawing the panels from the API's answers: the input, the ten bars, kernels, maps, contributions and curves.

// The diverging map (ColorBrewer's RdBu): blue for negative, white at zero, red for positive.
const STOPS = [
  [-1, [33, 102, 172]],
  [-2 / 3, [103, 169, 207]],
  [-1 / 3, [209, 229, 240]],
  [0, [255, 255, 255]],
  [1 / 3, [253, 219, 199]],
  [2 / 3, [239, 138, 98]],
  [1, [178, 24, 43]],
];
const SVG = "http://www.w3.org/2000/svg";

/** [r, g, b] of value / scale on the diverging map (clipped to -1..1; exactly white at 0). */
export function diverging(value, scale = 1) {
  const v = Math.max(-1, Math.min(1, scale > 0 ? value / scale : 0));
  for (let i = 1; i < STOPS.length; i++) {
    const [high, upper] = STOPS[i];
    if (v <= high) {
      const [low, lower] = STOPS[i - 1];
      const t = (v - low) / (high - low);
      return lower.map((c, j) => Math.round(c + t * (upper[j] - c)));
    }
  }
  return STOPS[STOPS.length - 1][1];
}

const css = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Paint rows of values onto a canvas of their size, each pixel coloured by colour(value). */
function paint(canvas, rows, colour) {
  const height = rows.length;
  const width = rows[0].length;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  rows.forEach((row, y) =>
    row.forEach((value, x) => {
      const [r, g, b] = colour(value);
      image.data.set([r, g, b, 255], (y * width + x) * 4);
    }),
  );
  context.putImageData(image, 0, 0);
}

export function drawInput(canvas, rows) {
  paint(canvas, rows, (v) => {
    const level = Math.round(255 * v);
    return [level, level, level];
  });
}

export function clearInput(canvas) {
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
}

/** Ten rows [data-digit] with the unrounded probability in data-p, drawn as bars. */
export function drawProbabilities(box, prediction, answer) {
  const top = answer ? answer.digit : -1;
  prediction.textContent = answer ? String(answer.digit) : "?";
  if (box.children.length !== 10) {
    box.replaceChildren();
    for (let digit = 0; digit < 10; digit++) {
      const row = element("div", "bar-row");
      row.dataset.digit = String(digit);
      const track = element("div", "track");
      track.append(element("div", "fill"));
      row.append(element("span", "digit", String(digit)), track, element("span", "value", "–"));
      box.append(row);
    }
  }
  for (const row of box.children) {
    const digit = Number(row.dataset.digit);
    const p = answer ? answer.probabilities[digit] : 0;
    row.dataset.p = answer ? String(p) : "";
    row.classList.toggle("top", digit === top);
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(2)}%`;
    row.querySelector(".value").textContent = answer ? `${(100 * p).toFixed(1)}%` : "–";
  }
}

function tiles(box, count, make) {
  if (box.children.length !== count) {
    box.replaceChildren();
    for (let k = 0; k < count; k++) {
      const tile = make(k);
      tile.dataset.kernel = String(k);
      box.append(tile);
    }
  }
  return [...box.children];
}

/** One button per kernel, its weights on the diverging map with one scale shared by all kernels. */
export function drawKernels(box, kernels, onPick) {
  const scale = Math.max(...kernels.flat(2).map(Math.abs));
  tiles(box, kernels.length, (k) => {
    const tile = element("button", "tile");
    tile.type = "button";
    tile.title = `kernel ${k}: click for its weights`;
    tile.append(element("canvas"), element("span", "", `kernel ${k}`));
    tile.addEventListener("click", () => onPick(k));
    return tile;
  }).forEach((tile, k) => paint(tile.querySelector("canvas"), kernels[k], (v) => diverging(v, scale)));
  return scale;
}

/** The weights of one kernel as a table of numbers, coloured on the kernels' shared scale. */
export function showKernelNumbers(box, kernels, k, scale) {
  const table = element("table");
  for (const row of kernels[k]) {
    const tr = element("tr");
    for (const value of row) {
      const cell = element("td", "", value.toFixed(3));
      const colour = diverging(value, scale);
      cell.style.background = css(colour);
      cell.style.color = Math.abs(value) > 0.6 * scale ? "#fff" : "inherit";
      cell.title = String(value);
      tr.append(cell);
    }
    table.append(tr);
  }
  const heading = element("h3", "", `kernel ${k}`);
  const note = element(
    "p",
    "note",
    "Its weights: the feature map at each place is the tanh of these times the 3×3 pixels under them, summed.",
  );
  box.replaceChildren(heading, table, note);
}

export function markKernel(boxes, k) {
  for (const box of boxes) {
    for (const tile of box.children) tile.classList.toggle("selected", Number(tile.dataset.kernel) === k);
  }
}

/** The K feature maps of the drawing, on the fixed scale -1..1 (tanh's range); blank ones before any drawing. */
export function drawMaps(box, maps, count, side) {
  tiles(box, count, (k) => {
    const tile = element("div", "tile");
    tile.append(element("canvas"), element("span", "", `map ${k}`));
    return tile;
  }).forEach((tile, k) => {
    const rows = maps ? maps[k] : Array.from({ length: side }, () => new Array(side).fill(0));
    paint(tile.querySelector("canvas"), rows, (v) => diverging(v, 1));
  });
}

/** contributions[k][c] as a K x 10 table on one symmetric scale, with the scores (their sums) below. */
export function drawContributions(box, answer, count) {
  const table = element("table");
  const head = element("tr");
  head.append(element("th"));
  for (let c = 0; c < 10; c++) head.append(element("th", c === answer?.digit ? "top" : "", String(c)));
  table.append(head);
  const shares = answer ? answer.contributions : Array.from({ length: count }, () => new Array(10).fill(0));
  const scale = Math.max(1e-12, ...shares.flat().map(Math.abs));
  shares.forEach((row, k) => {
    const tr = element("tr");
    tr.append(element("th", "", `kernel ${k}`));
    row.forEach((value, c) => {
      const cell = element("td", c === answer?.digit ? "top" : "");
      cell.style.background = css(diverging(value, scale));
      cell.title = `kernel ${k} → digit ${c}: ${value}`;
      tr.append(cell);
    });
    table.append(tr);
  });
  const total = element("tr", "total");
  total.append(element("th", "", "score"));
  for (let c = 0; c < 10; c++) {
    const score = shares.reduce((sum, row) => sum + row[c], 0);
    total.append(element("td", c === answer?.digit ? "top" : "", answer ? score.toFixed(1) : "–"));
  }
  table.append(total);
  box.replaceChildren(table);
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Train and test accuracy per epoch as two lines; data-epochs on the box counts the epochs drawn. */
export function drawCurves(box, history) {
  const width = 460;
  const height = 250;
  const left = 40;
  const right = 14;
  const top = 26;
  const bottom = 30;
  const last = Math.max(1, history.length ? history[history.length - 1].epoch : 1);
  const x = (epoch) => left + ((width - left - right) * epoch) / last;
  const y = (accuracy) => top + (height - top - bottom) * (1 - accuracy);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "accuracy per epoch" });
  const grid = svg("g", { class: "grid" });
  for (const a of [0, 0.25, 0.5, 0.75, 1]) {
    grid.append(svg("line", { x1: left, x2: width - right, y1: y(a), y2: y(a) }));
    grid.append(svg("text", { x: left - 6, y: y(a) + 4, "text-anchor": "end" }, a.toFixed(2)));
  }
  const ticks = [...new Set([0, Math.round(last / 2), last])];
  for (const epoch of ticks) {
    grid.append(svg("text", { x: x(epoch), y: height - bottom + 16, "text-anchor": "middle" }, String(epoch)));
  }
  grid.append(svg("text", { x: width - right, y: height - 2, "text-anchor": "end" }, "epoch"));
  chart.append(grid);
  const dots = history.length <= 60;
  for (const series of ["train", "test"]) {
    const points = history.filter((row) => row[`${series}_acc`] !== null);
    const coordinates = points.map((row) => [x(row.epoch), y(row[`${series}_acc`])]);
    chart.append(svg("polyline", { class: series, points: coordinates.map((p) => p.join(",")).join(" ") }));
    if (dots) coordinates.forEach(([cx, cy]) => chart.append(svg("circle", { class: series, cx, cy, r: 2.5 })));
  }
  const latest = (series) => history.filter((row) => row[`${series}_acc`] !== null).pop()?.[`${series}_acc`];
  ["train", "test"].forEach((series, i) => {
    const label = `${series} ${latest(series)?.toFixed(4) ?? "–"}`;
    const at = left + 10 + i * 130;
    chart.append(svg("line", { class: series, x1: at, x2: at + 18, y1: 12, y2: 12 }));
    chart.append(svg("text", { x: at + 24, y: 16 }, label));
  });
  box.replaceChildren(chart);
  box.dataset.epochs = String(history.length);
}
