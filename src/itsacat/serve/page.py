"""The page at GET /: pick or drop a photo, see it, the verdict, P(cat), and each layer.

One self-contained HTML document (inline CSS, inline JS, the chart drawn as inline SVG):
nothing is fetched from the internet, and the server's Content-Security-Policy forbids it.
The photo goes to `POST /invocations?trace=1` as its own bytes; the answer's per-layer
trace becomes one bar chart per layer (a bar per perceptron, filled when it fired).
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>itsacat: is it a cat?</title>
<style>
  :root { --ink: #1d2330; --muted: #667085; --line: #d0d5dd; --cat: #12805c;
          --not: #b42318; --bar: #4f6bed; --bg: #f6f7fb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--ink); background: var(--bg); }
  main { max-width: 880px; margin: 0 auto; padding: 24px 20px 40px; }
  h1 { font-size: 26px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin: 0 0 20px; }
  .grid { display: grid; grid-template-columns: 300px 1fr; gap: 20px; }
  @media (max-width: 720px) { .grid { grid-template-columns: 1fr; } }
  #drop { display: flex; flex-direction: column; align-items: center; justify-content: center;
          min-height: 300px; border: 2px dashed var(--line); border-radius: 14px;
          background: #fff; cursor: pointer; text-align: center; padding: 12px;
          transition: border-color .15s, background .15s; overflow: hidden;
          align-self: start; }
  #drop.over { border-color: var(--bar); background: #eef1ff; }
  #drop img { max-width: 100%; max-height: 260px; border-radius: 8px; display: none; }
  #drop.has-photo img { display: block; }
  #drop.has-photo .hint { display: none; }
  .hint b { color: var(--bar); }
  #file { position: absolute; width: 1px; height: 1px; opacity: 0; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 14px;
          padding: 18px 20px; }
  #verdict { font-size: 34px; font-weight: 700; margin: 0; }
  #verdict.cat { color: var(--cat); }
  #verdict.not { color: var(--not); }
  .meter { position: relative; height: 12px; background: #eaecf0; border-radius: 6px;
           margin: 10px 0 4px; overflow: hidden; }
  .meter i { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px;
             background: var(--ink); display: none; }
  .meter span { display: block; height: 100%; width: 0; background: var(--cat);
                transition: width .3s; }
  #probability { font-variant-numeric: tabular-nums; }
  .muted { color: var(--muted); font-size: 14px; }
  #error { color: var(--not); font-weight: 600; white-space: pre-wrap; }
  h2 { font-size: 17px; margin: 22px 0 8px; }
  .layer { margin: 0 0 12px; }
  .layer .name { font-size: 13px; color: var(--muted); margin-bottom: 2px; }
  svg { display: block; width: 100%; height: 64px; background: #fafbff;
        border: 1px solid #eef0f6; border-radius: 6px; }
  footer { margin-top: 24px; color: var(--muted); font-size: 13px; }
</style>
</head>
<body data-state="empty">
<main>
  <h1>Is it a cat?</h1>
  <p class="sub">A from-scratch neural network looks at a 64&times;64 copy of your photo.
     Nothing leaves this server.</p>
  <div class="grid">
    <label id="drop" for="file">
      <input id="file" type="file" accept="image/*">
      <img id="preview" alt="your photo">
      <span class="hint"><b>Choose a photo</b><br>or drop it here<br>
        <span class="muted">JPEG or PNG, any size</span></span>
    </label>
    <section class="card" aria-live="polite">
      <p id="verdict">&nbsp;</p>
      <div class="meter"><span id="meter"></span>
        <i id="cut" title="the model's threshold"></i></div>
      <div>P(cat) = <span id="probability">&ndash;</span>
        <span class="muted" id="rule"></span></div>
      <p id="error"></p>
      <h2>How each layer's perceptrons responded</h2>
      <div id="layers"><p class="muted">Pick a photo to see every layer at work.</p></div>
    </section>
  </div>
  <footer>model <span id="version">&hellip;</span> &middot; POST /invocations &middot;
    GET /ping</footer>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function drawLayers(trace, threshold) {
  const box = $("layers");
  box.replaceChildren();
  trace.forEach((layer, k) => {
    const out = layer.outputs;
    // the output layer's one perceptron is P(cat): it "fires" (cat) from the model's threshold
    const last = k === trace.length - 1;
    const mid = last ? threshold : layer.activation === "sigmoid" ? 0.5 : 0;
    const on = (v) => (last ? v >= mid : v > mid);
    const fired = out.filter(on).length;
    // sigmoid outputs are probabilities: draw them on a fixed 0…1 scale
    const sig = layer.activation === "sigmoid";
    const lo = sig ? 0 : Math.min(0, ...out), hi = sig ? 1 : Math.max(1e-9, ...out);
    const div = document.createElement("div");
    div.className = "layer";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = last
      ? `layer ${layer.layer} \\u00b7 sigmoid output \\u00b7 P(cat) ${out[0].toFixed(3)}` +
        ` \\u00b7 a cat from ${threshold} (the line)`
      : `layer ${layer.layer} \\u00b7 ${layer.activation} \\u00b7 ` +
        `${out.length} perceptron${out.length > 1 ? "s" : ""} \\u00b7 ${fired} fired`;
    const W = 600, H = 64, gap = 2, bw = Math.max(2, (W - gap * (out.length + 1)) / out.length);
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                                role: "img", "aria-label": name.textContent });
    const y0 = H - 4 - ((0 - lo) / (hi - lo)) * (H - 8);
    svg.appendChild(svgEl("line", { x1: 0, x2: W, y1: y0, y2: y0, stroke: "#c7cbe0" }));
    out.forEach((v, i) => {
      const y = H - 4 - ((v - lo) / (hi - lo)) * (H - 8);
      const rect = svgEl("rect", { x: gap + i * (bw + gap), y: Math.min(y, y0), width: bw,
        height: Math.max(1, Math.abs(y0 - y)), rx: 2,
        fill: on(v) ? "#4f6bed" : "#c9cfe8" });
      const tip = svgEl("title", {});
      tip.textContent = `perceptron ${i + 1}: ${v.toFixed(3)}`;
      rect.appendChild(tip);
      svg.appendChild(rect);
    });
    if (last) {
      const yt = H - 4 - ((threshold - lo) / (hi - lo)) * (H - 8);
      svg.appendChild(svgEl("line", { x1: 0, x2: W, y1: yt, y2: yt, stroke: "#1d2330",
                                      "stroke-dasharray": "6 4" }));
    }
    div.append(name, svg);
    box.appendChild(div);
  });
}

function show(result) {
  const isCat = result.label === "cat";
  const v = $("verdict");
  v.textContent = isCat ? "cat" : "not a cat";
  v.className = isCat ? "cat" : "not";
  $("probability").textContent = result.probability.toFixed(3);
  $("meter").style.width = (100 * result.probability).toFixed(1) + "%";
  $("meter").style.background = isCat ? "var(--cat)" : "var(--not)";
  // the tick: where the model starts calling a photo a cat
  $("cut").style.left = (100 * result.threshold).toFixed(1) + "%";
  $("cut").style.display = "block";
  $("rule").textContent = "\\u00b7 a cat from " + result.threshold;
  $("version").textContent = result.model_version;
  drawLayers(result.trace || [], result.threshold);
}

async function classify(file) {
  if (!file) return;
  document.body.dataset.state = "busy";
  $("error").textContent = "";
  $("verdict").textContent = "\\u2026";
  $("verdict").className = "";
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("drop").classList.add("has-photo");
  try {
    const r = await fetch("/invocations?trace=1", { method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/x-image",
                 "Accept": "application/json" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    show(body);
    document.body.dataset.state = "done";
  } catch (err) {
    $("verdict").textContent = "\\u00a0";
    $("probability").textContent = "\\u2013";
    $("meter").style.width = "0";
    $("cut").style.display = "none";
    $("rule").textContent = "";
    $("layers").replaceChildren();
    $("error").textContent = String(err.message || err);
    document.body.dataset.state = "error";
  }
}

$("file").addEventListener("change", (e) => classify(e.target.files[0]));
const drop = $("drop");
for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over"); });
for (const t of ["dragleave", "drop"]) drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => classify(e.dataTransfer.files[0]));
fetch("/ping").then((r) => r.json()).then((p) => { $("version").textContent = p.model_version; })
  .catch(() => {});
</script>
</body>
</html>
"""
