// The page's behaviour: send an image to the API, show what the model saw and its top 5.
// Plain JavaScript, no libraries and nothing fetched from elsewhere: the page works offline.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);

// --- talking to the API --------------------------------------------------------------

async function call(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // a non-JSON answer (a proxy's error page): report the status alone
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

let sentUrl = null;
let limits = null; // the server's, from the model card

// A photo over the server's limits is scaled down here first (to fit them, and 2048 pixels
// at most on its longest side; PNG, so a transparent background stays transparent); any other file is sent as it is, so the answer
// is exactly `fmnist predict FILE`'s.
async function fitToLimits(file) {
  if (!limits || !window.createImageBitmap) return file;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (_) {
    return file; // not an image the browser reads: the server will say what is wrong
  }
  const { width, height } = bitmap;
  if (width * height <= limits.max_pixels && file.size <= limits.max_body_bytes) return file;
  const scale = Math.min(1, 2048 / Math.max(width, height), Math.sqrt((0.9 * limits.max_pixels) / (width * height)));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function classifyPhoto(file) {
  classifyFile(await fitToLimits(file), file.name);
}

function classifyFile(blob, name) {
  if (sentUrl) URL.revokeObjectURL(sentUrl);
  sentUrl = URL.createObjectURL(blob);
  $("sent").src = sentUrl;
  const form = new FormData();
  form.append("file", blob, name);
  return classify(`/v1/predict?top_k=${TOP_K}`, { method: "POST", body: form }, null);
}

function classifyPixels(pixels, actual) {
  const options = {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pixels }),
  };
  return classify(`/v1/predict?top_k=${TOP_K}`, options, { pixels, actual });
}

async function classify(url, options, sample) {
  document.body.classList.add("busy");
  $("error").hidden = true;
  try {
    const answer = await call(url, options);
    show(answer, sample);
  } catch (e) {
    $("error").textContent = e.message;
    $("error").hidden = false;
  } finally {
    document.body.classList.remove("busy");
  }
}

// --- showing an answer ---------------------------------------------------------------

let answers = 0; // how many answers were shown: lets a test (or a person) see a new one arrive

function show(answer, sample) {
  const seen = $("seen");
  seen.src = sample ? pixelsToDataUrl(sample.pixels) : answer.model_input_png;
  seen.hidden = false;
  $("sent-figure").hidden = Boolean(sample); // a test image is sent as it is: nothing else to show
  $("result-label").textContent = answer.predicted_name;
  $("result-confidence").textContent = `${(answer.confidence * 100).toFixed(1)}%`;
  const actual = $("result-actual");
  actual.className = "";
  if (sample && sample.actual) {
    const right = sample.actual.label === answer.predicted;
    actual.textContent = `actual: ${sample.actual.name} (test image ${sample.actual.index}) ${right ? "✓ right" : "✗ wrong"}`;
    actual.className = right ? "right" : "wrong";
  } else {
    actual.textContent = "";
  }
  const bars = $("bars");
  bars.replaceChildren();
  for (const t of answer.top) {
    const li = document.createElement("li");
    const pct = t.probability * 100;
    li.innerHTML = `<span class="name"></span><span class="bar"><span></span></span><span class="pct"></span>`;
    li.querySelector(".name").textContent = t.name;
    li.querySelector(".bar span").style.width = `${pct.toFixed(1)}%`;
    li.querySelector(".pct").textContent = `${pct.toFixed(1)}%`;
    bars.appendChild(li);
  }
  $("timing").textContent = `${answer.model} on ${answer.backend}: ${answer.inference_ms.toFixed(2)} ms`;
  $("result").dataset.answers = String(++answers); // last: the answer is all on the page now
}

function pixelsToDataUrl(pixels) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 28;
  paintPixels(canvas, pixels);
  return canvas.toDataURL("image/png");
}

function paintPixels(canvas, pixels) {
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const i = (y * 28 + x) * 4;
      img.data[i] = img.data[i + 1] = img.data[i + 2] = pixels[y][x];
      img.data[i + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

// --- the model card ------------------------------------------------------------------

function pct(x) {
  return x == null ? "not measured" : `${(x * 100).toFixed(2)}%`;
}

function normalization(n) {
  if (!n || n.mean == null) return "?";
  return `${n.mode ?? "standardize"}: mean ${Number(n.mean).toFixed(4)}, std ${Number(n.std).toFixed(4)} (inside the model)`;
}

async function loadCard() {
  const card = await call("/v1/model");
  limits = card.limits;
  $("model-line").textContent = `Model: ${card.name} (${card.run}) on ${card.backend_name}.`;
  const rows = [
    ["Architecture", card.name + (card.preset ? ` (preset ${card.preset})` : "")],
    ["Parameters", card.parameters == null ? "?" : card.parameters.toLocaleString("en")],
    ["FLOPs per image", card.flops_per_image == null ? "?" : `${(card.flops_per_image / 1e6).toFixed(1)} M`],
    ["Validation accuracy", pct(card.validation_accuracy)],
    ["Test accuracy", card.test_accuracy == null ? "not measured (run fmnist evaluate)" : pct(card.test_accuracy)],
    ["Epoch", card.epoch ?? "?"],
    ["Flip TTA", card.tta ? "yes" : "no"],
    ["Confidence", card.calibrated ? `calibrated (temperature ${card.temperature.toFixed(3)})` : "raw softmax (no fitted temperature)"],
    ["Normalization", normalization(card.normalization)],
    ["Trained on", `${card.train_images == null ? "?" : card.train_images.toLocaleString("en")} images, ${card.trained_on ?? "?"}`],
    ["Classes", card.classes.map((c, i) => `${i} ${c}`).join(", ")],
  ];
  const dl = $("model-card");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

// --- the strip of test images ---------------------------------------------------------

async function loadSamples() {
  const box = $("samples");
  try {
    const { images } = await call("/v1/test-images?count=12");
    box.replaceChildren();
    for (const s of images) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sample";
      button.title = `test image ${s.index}: ${s.name}`;
      button.dataset.index = s.index;
      button.dataset.label = s.label;
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 28;
      paintPixels(canvas, s.pixels);
      button.appendChild(canvas);
      button.addEventListener("click", () => classifyPixels(s.pixels, { label: s.label, name: s.name, index: s.index }));
      box.appendChild(button);
    }
  } catch (e) {
    box.textContent = `No test images: ${e.message}`;
  }
}

// --- a photo: drop or choose -----------------------------------------------------------

function setUpDrop() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) classifyPhoto(file);
    e.target.value = ""; // choosing the same file again classifies it again
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) classifyPhoto(file);
  });
}

// --- a drawing: light strokes on black, like the data set --------------------------------

function setUpCanvas() {
  const canvas = $("draw-canvas");
  const ctx = canvas.getContext("2d");
  let drawing = false;
  let drawn = false;
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    drawn = false;
  };
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  };
  clear();
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = 18;
  ctx.strokeStyle = "#fff";
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true;
    canvas.setPointerCapture(e.pointerId);
    const [x, y] = point(e);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 0.01, y);
    ctx.stroke();
    drawn = true;
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const [x, y] = point(e);
    ctx.lineTo(x, y);
    ctx.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    sendDrawing();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  const sendDrawing = () => {
    if (!drawn) return;
    canvas.toBlob((blob) => classifyFile(blob, "drawing.png"), "image/png");
  };
  $("clear-drawing").addEventListener("click", clear);
  $("classify-drawing").addEventListener("click", sendDrawing);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDrop();
  setUpCanvas();
  $("shuffle").addEventListener("click", loadSamples);
  loadCard().catch((e) => {
    $("model-card").textContent = e.message;
  });
  loadSamples();
});
