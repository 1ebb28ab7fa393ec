// The page: fetches the model, sends the drawing to /api/predict while it is drawn (one request at a time, the
// latest drawing next), and follows /api/events for the epochs (live under `portable-cnn train --live`).
import { Pad } from "./pad.js";
import {
  clearInput,
  drawContributions,
  drawCurves,
  drawInput,
  drawKernels,
  drawMaps,
  drawProbabilities,
  markKernel,
  showKernelNumbers,
} from "./panels.js";

const $ = (selector) => document.querySelector(selector);
const view = {
  model: null, // GET /api/model
  answer: null, // the last POST /api/predict answer, or null with no drawing
  history: [], // the epochs so far
  picked: null, // the kernel whose numbers are shown
  scale: 1, // the kernels' shared scale
  training: true,
};

/** fn, one run at a time: a call while it runs makes one more run after it, so the latest state always gets sent. */
function oneAtATime(fn) {
  let running = false;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  };
}

const loadModel = oneAtATime(async () => {
  const response = await fetch("api/model");
  if (!response.ok) {
    showStatus((await response.json()).error);
    return;
  }
  view.model = await response.json();
  showStatus("");
  render();
  if (!pad.empty) predictSoon();
});

/** The drawing to /api/predict, as it is drawn (throttled by the server's answers, not a timer). */
const predictSoon = oneAtATime(async () => {
  if (!view.model || pad.empty) return;
  try {
    const response = await fetch("api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pixels: pad.pixels() }),
    });
    const answer = await response.json();
    if (!response.ok) {
      showStatus(answer.error);
      return;
    }
    if (!pad.empty) view.answer = answer; // unless cleared meanwhile
    showStatus("");
    render();
  } catch (error) {
    showStatus(`the server did not answer (${error.message})`);
  }
});

const pad = new Pad($("#draw"), predictSoon);

function showStatus(message) {
  const model = view.model;
  const about = model
    ? `${model.recipe.name} recipe · ${model.epochs_done} epochs trained · ` +
      `${model.num_kernels} kernels of ${model.kernel_size}×${model.kernel_size} · ${model.positions}×${model.positions} maps`
    : "";
  $("#status").textContent = message ? `${about}${about ? " · " : ""}${message}` : about;
}

function render() {
  const model = view.model;
  if (!model) return;
  view.scale = drawKernels($("#kernels"), model.kernels, pick);
  $("#kernel-scale").textContent = `±${view.scale.toFixed(3)}`;
  drawMaps($("#maps"), view.answer?.maps, model.num_kernels, model.positions);
  drawProbabilities($("#probabilities"), $("#prediction"), view.answer);
  drawContributions($("#contributions"), view.answer, model.num_kernels);
  if (view.answer) drawInput($("#input"), view.answer.input);
  else clearInput($("#input"));
  if (view.picked !== null) showKernelNumbers($("#kernel-numbers"), model.kernels, view.picked, view.scale);
  markKernel([$("#kernels"), $("#maps")], view.picked);
}

function pick(k) {
  view.picked = k;
  render();
}

function showEpochs() {
  const latest = view.history[view.history.length - 1];
  $("#epoch").textContent = latest ? String(latest.epoch) : "–";
  drawCurves($("#curves"), view.history);
}

function follow() {
  const events = new EventSource("api/events");
  events.addEventListener("epoch", (event) => {
    const entry = JSON.parse(event.data);
    view.history = view.history.filter((row) => row.epoch < entry.epoch).concat([entry]);
    showEpochs();
    if (view.training) loadModel(); // the kernels after this epoch
  });
  events.addEventListener("done", () => {
    events.close();
    view.training = false;
    const state = $("#state");
    state.textContent = "not training";
    state.classList.remove("live");
    $("#live-note").textContent = "";
    if (!view.model) loadModel();
  });
  const state = $("#state");
  state.textContent = "live: training";
  state.classList.add("live");
  $("#live-note").textContent = ", drawn as each one ends";
}

$("#clear").addEventListener("click", () => {
  pad.clear();
  view.answer = null;
  render();
});

showEpochs();
drawProbabilities($("#probabilities"), $("#prediction"), null);
clearInput($("#input"));
loadModel();
follow();
