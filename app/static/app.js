// The web page: pick an image, a model and a format; follow the job's progress (it moves with the tiles);
// compare before and after over the same region, at 1:1 pixels, with zoom and pan. Plain JS, no build step.
"use strict";
const $ = (id) => document.getElementById(id);

// How each model looks and how fast it runs (measured: README "Models"); PSNR comes from the catalog, which
// holds each active version's model card scores.
const MODELS = {
  srresnet: ["SRResNet", "smooth and faithful, the highest PSNR", "slow: about 2 MP/s on 2 CPU cores, fast on a GPU"],
  srgan: ["SRGAN", "the sharpest textures; may invent fine detail", "slow, like SRResNet"],
  espcn: ["ESPCN", "a little soft", "fast: about 95 MP/s on 2 CPU cores"],
  srcnn: ["SRCNN", "soft", "medium: about 5 MP/s on 2 CPU cores"],
  bicubic: ["bicubic", "blurry, no network: the baseline", "fastest"],
  bilinear: ["bilinear", "blurrier than bicubic", "fastest"],
  nearest: ["nearest", "blocky pixels, for comparing", "fastest"],
};
const EXT = { png: "png", webp: "webp", jpeg: "jpg" };
let catalog = null;
let chosen = null;
let uploadUrl = null;
let resultUrl = null;

// -- the client key (a gateway with SRGAN_API_KEYS answers 401 without one) -------------------------------------
const KEY = "srgan-api-key";

function apiKey() {
  return $("api-key").value.trim();
}

function keyed() {
  return !$("key-box").hidden;
}

// fetch() with the key, when there is one (the model list and the page itself are public).
function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  return fetch(path, { ...options, headers });
}

function askForKey() {
  $("key-box").hidden = false;
  $("key-help").textContent = apiKey()
    ? "This key was refused: check it, or ask the gateway's operator for yours."
    : "This gateway needs a client key: type yours here, then press Upscale again.";
  $("api-key").focus();
}

function saveKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  if (apiKey()) ($("remember-key").checked ? localStorage : sessionStorage).setItem(KEY, apiKey());
}

async function checkKey() {
  $("api-key").value = sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
  $("remember-key").checked = Boolean(localStorage.getItem(KEY));
  try {
    const response = await api("/v1/jobs?limit=1");  // 401: this gateway has keys (and ours is missing or wrong)
    if (response.status === 401) {
      $("key-box").hidden = false;
      if (apiKey()) $("key-help").textContent = "The saved key is not valid here: " + (await errorText(response));
    } else if (response.ok && apiKey()) {
      $("key-box").hidden = false;  // a keyed gateway that takes ours: keep the field, to change it
    }
  } catch (e) {
    // unreachable: loadModels says so
  }
}
$("api-key").addEventListener("change", saveKey);
$("remember-key").addEventListener("change", saveKey);

function apiError(body, status) {
  if (body && body.error) return `${body.error.message} (${body.error.code})`;
  return `HTTP ${status}`;
}

async function errorText(response) {
  try {
    return apiError(await response.json(), response.status);
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

// -- models ------------------------------------------------------------------------------------------------
function psnrLine(m) {
  const sets = Object.entries(m.metrics || {}).filter(([, v]) => v && typeof v.psnr_y === "number");
  if (!sets.length) return "";
  return "PSNR " + sets.map(([set, v]) => `${v.psnr_y.toFixed(2)} dB ${set}`).join(", ");
}

function renderModels() {
  const scale = Number($("scale").value);
  const previous = document.querySelector("input[name=model]:checked")?.value;
  const list = $("model-list");
  list.replaceChildren();
  const rows = catalog.models.filter((m) => m.scale === scale && m.has_weights);
  for (const m of rows) {
    const [title, look, speed] = MODELS[m.name] || [m.name, m.description, ""];
    const label = document.createElement("label");
    label.className = "model";
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "model", value: m.name });
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: title });
    const line = Object.assign(document.createElement("span"), { className: "line" });
    line.textContent = [look, speed, psnrLine(m)].filter(Boolean).join(" · ");
    label.append(input, name, line);
    list.append(label);
  }
  const want = rows.find((m) => m.name === previous) || rows.find((m) => m.name === catalog.default) || rows[0];
  if (want) list.querySelector(`input[value="${want.name}"]`).checked = true;
  showRealism();
  describeChoice();
}

// The realism slider blends srresnet (0) and srgan (1): offered with srgan, when both have weights here.
function showRealism() {
  const scale = Number($("scale").value);
  const both = ["srresnet", "srgan"].every((n) => catalog.models.some((m) => m.name === n && m.scale === scale && m.has_weights));
  $("realism-row").hidden = !(both && document.querySelector("input[name=model]:checked")?.value === "srgan");
}
$("model-list").addEventListener("change", showRealism);
$("realism").addEventListener("input", () => ($("realism-value").textContent = Number($("realism").value).toFixed(2)));

async function loadModels() {
  let response;
  try {
    response = await fetch("/v1/models");
  } catch (e) {
    $("error").textContent = `cannot reach the service: ${e.message}`;
    return;
  }
  if (!response.ok) {
    $("error").textContent = "cannot list models: " + (await errorText(response));
    return;
  }
  catalog = await response.json();
  const scales = [...new Set(catalog.models.filter((m) => m.has_weights).map((m) => m.scale))].sort((a, b) => a - b);
  for (const s of scales) $("scale").add(new Option(`×${s}`, String(s), false, s === (catalog.default_scale ?? 4)));
  renderModels();
}

// -- the upload and its preview ----------------------------------------------------------------------------
function describeChoice() {
  if (!chosen) return;
  const scale = Number($("scale").value) || 1;
  const img = $("preview");
  const size = img.naturalWidth ? ` · ${img.naturalWidth}×${img.naturalHeight}` : "";
  const out = img.naturalWidth ? ` → ${img.naturalWidth * scale}×${img.naturalHeight * scale}` : "";
  $("filename").textContent = `${chosen.name} · ${Math.max(1, Math.round(chosen.size / 1024))} kB${size}${out}`;
}

function choose(file) {
  chosen = file;
  if (uploadUrl) URL.revokeObjectURL(uploadUrl);
  uploadUrl = file ? URL.createObjectURL(file) : null;
  const img = $("preview");
  img.hidden = !file;
  if (file) {
    img.onload = describeChoice;
    img.onerror = () => { $("filename").textContent = `${file.name} (no preview: the browser cannot show it)`; };
    img.src = uploadUrl;
  }
  $("drop-help").textContent = file ? "Drop or press to choose another image" : "Drop an image here, or press to choose one";
  $("filename").textContent = file ? file.name : "";
  $("submit").disabled = !file;
  $("error").textContent = "";
}

$("drop").addEventListener("click", () => $("file").click());
$("drop").addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
});
$("file").addEventListener("change", () => choose($("file").files[0] || null));
for (const type of ["dragenter", "dragover"]) {
  $("drop").addEventListener(type, (e) => { e.preventDefault(); $("drop").classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  $("drop").addEventListener(type, (e) => { e.preventDefault(); $("drop").classList.remove("over"); });
}
$("drop").addEventListener("drop", (e) => choose(e.dataTransfer.files[0] || null));
$("scale").addEventListener("change", renderModels);

// -- the job -----------------------------------------------------------------------------------------------
function show(job) {
  $("progress").value = job.progress || 0;
  if (job.status === "queued") {
    const ahead = job.queue_position ? `${job.queue_position} ahead` : "next";
    const eta = job.estimated_wait_s ? `, about ${Math.ceil(job.estimated_wait_s)} s` : "";
    $("status").textContent = `queued (${ahead}${eta})`;
  } else if (job.status === "started") {
    $("status").textContent = `upscaling… ${Math.round(100 * (job.progress || 0))} % of the tiles`;
  }
}

async function follow(job) {
  // Long-polls for any change: with the ETag of the last reading in If-None-Match, the gateway answers as soon as
  // the job's status or progress moves (so the bar follows the tiles), or 304 when nothing did for a while. A
  // queued job is read plainly after each 304, so its place in the queue stays fresh.
  let etag = null;
  while (job.status === "queued" || job.status === "started") {
    show(job);
    const wait = job.status === "queued" ? 5 : 30;
    const response = etag
      ? await api(`${job.links.self}?wait=${wait}`, { headers: { "If-None-Match": etag } })
      : await api(job.links.self);
    if (response.status === 304) {
      etag = null;
      continue;
    }
    if (!response.ok) throw new Error(await errorText(response));
    etag = response.headers.get("ETag");
    job = await response.json();
  }
  return job;
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const model = document.querySelector("input[name=model]:checked");
  if (!chosen || !model) return;
  const data = new FormData();
  data.append("file", chosen);
  data.append("model", model.value);
  data.append("scale", $("scale").value);
  data.append("format", $("format").value);
  if (!$("realism-row").hidden && $("realism").value !== "1") data.append("realism", $("realism").value);
  $("error").textContent = "";
  $("status").textContent = "uploading…";
  $("submit").disabled = true;
  $("progress").value = 0;
  $("progress").hidden = false;
  $("viewer-box").hidden = true;
  try {
    const response = await api("/v1/upscale", { method: "POST", body: data });
    if (response.status === 401) askForKey();
    if (!response.ok) throw new Error(await errorText(response));
    const job = await follow(await response.json());
    if (job.status !== "finished") throw new Error(job.error ? apiError(job) : `the job was ${job.status}`);
    $("progress").value = 1;
    $("status").textContent = `done: ${job.input.width}×${job.input.height} → ${job.output.width}×${job.output.height}`
      + ` in ${(job.timings.processing_s ?? 0).toFixed(2)} s`;
    await showResult(job);
  } catch (err) {
    $("status").textContent = "";
    $("error").textContent = err.message;
  } finally {
    $("progress").hidden = true;
    $("submit").disabled = !chosen;
  }
});

// -- before / after ----------------------------------------------------------------------------------------
const view = { z: 1, x: 0, y: 0, w: 0, h: 0, split: 0.5, fresh: true };

function loaded(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error(`cannot show ${img.alt}`));
    img.src = src;
  });
}

// The result's address: its URL, or with a key (which an <img> cannot send) the fetched bytes as a blob: URL.
async function resultSource(job) {
  if (!keyed()) return job.links.result;
  const response = await api(job.links.result);
  if (!response.ok) throw new Error(await errorText(response));
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(await response.blob());
  return resultUrl;
}

async function showResult(job) {
  const stem = chosen.name.replace(/\.[^.]*$/, "");
  const src = await resultSource(job);
  $("download").href = src;
  $("download").download = `${stem}_x${job.scale}.${EXT[job.format] || job.format}`;
  $("open").href = src;
  $("result-caption").textContent = `${(MODELS[job.model] || [job.model])[0]} ×${job.scale}: `
    + `${job.output.width}×${job.output.height}`;
  view.w = job.output.width;
  view.h = job.output.height;
  $("viewer-box").hidden = false;
  await Promise.all([loaded($("before"), uploadUrl), loaded($("after"), src)]);
  for (const img of [$("before"), $("after")]) {
    img.style.width = `${view.w}px`;
    img.style.height = `${view.h}px`;
  }
  view.fresh = true;
  zoomTo(1);  // actual pixels, centred: the detail is the point
  $("viewer").focus({ preventScroll: true });
}

function clamp() {
  const box = $("viewer").getBoundingClientRect();
  for (const [axis, size, room] of [["x", view.w * view.z, box.width], ["y", view.h * view.z, box.height]]) {
    view[axis] = size <= room ? (room - size) / 2 : Math.min(0, Math.max(room - size, view[axis]));
  }
}

function apply() {
  clamp();
  const box = $("viewer").getBoundingClientRect();
  const t = `translate(${view.x}px, ${view.y}px) scale(${view.z})`;
  $("before").style.transform = t;
  $("after").style.transform = t;
  const at = Math.round(box.width * view.split);
  $("after-layer").style.clipPath = `inset(0 0 0 ${at}px)`;
  $("divider").style.left = `${at - 1}px`;
  $("viewer").classList.toggle("pixels", view.z >= 2);
  $("zoom-label").textContent = view.z === 1 ? "1:1" : `${Math.round(view.z * 100)} %`;
  Object.assign($("viewer").dataset, { zoom: view.z, x: Math.round(view.x), y: Math.round(view.y), split: view.split });
}

function zoomTo(z, cx, cy) {
  const box = $("viewer").getBoundingClientRect();
  cx ??= box.width / 2;
  cy ??= box.height / 2;
  z = Math.min(16, Math.max(0.05, z));
  // Keep the image point under (cx, cy) where it is; for a new result, centre the image.
  const px = view.fresh ? view.w / 2 : (cx - view.x) / view.z;
  const py = view.fresh ? view.h / 2 : (cy - view.y) / view.z;
  view.fresh = false;
  view.z = z;
  view.x = cx - px * z;
  view.y = cy - py * z;
  apply();
}

function fit() {
  const box = $("viewer").getBoundingClientRect();
  zoomTo(Math.min(box.width / view.w, box.height / view.h));
}

$("zoom-in").addEventListener("click", () => zoomTo(view.z * 2));
$("zoom-out").addEventListener("click", () => zoomTo(view.z / 2));
$("zoom-1").addEventListener("click", () => zoomTo(1));
$("zoom-fit").addEventListener("click", fit);
$("split").addEventListener("input", () => { view.split = $("split").value / 100; apply(); });
window.addEventListener("resize", () => { if (!$("viewer-box").hidden) apply(); });

$("viewer").addEventListener("wheel", (e) => {
  e.preventDefault();
  const box = $("viewer").getBoundingClientRect();
  zoomTo(view.z * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - box.left, e.clientY - box.top);
}, { passive: false });

let drag = null;
$("viewer").addEventListener("pointerdown", (e) => {
  drag = { id: e.pointerId, x: e.clientX, y: e.clientY };
  $("viewer").setPointerCapture(e.pointerId);
  $("viewer").classList.add("dragging");
});
$("viewer").addEventListener("pointermove", (e) => {
  if (!drag || drag.id !== e.pointerId) return;
  view.x += e.clientX - drag.x;
  view.y += e.clientY - drag.y;
  drag.x = e.clientX;
  drag.y = e.clientY;
  apply();
});
for (const type of ["pointerup", "pointercancel"]) {
  $("viewer").addEventListener(type, () => { drag = null; $("viewer").classList.remove("dragging"); });
}

$("viewer").addEventListener("keydown", (e) => {
  const step = e.shiftKey ? 200 : 40;
  const pan = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] }[e.key];
  if (pan) {
    view.x += pan[0];
    view.y += pan[1];
    apply();
  } else if (e.key === "+" || e.key === "=") zoomTo(view.z * 2);
  else if (e.key === "-") zoomTo(view.z / 2);
  else if (e.key === "1" || e.key === "0") zoomTo(1);
  else if (e.key === "f") fit();
  else if (e.key === "[" || e.key === "]") {
    view.split = Math.min(1, Math.max(0, view.split + (e.key === "[" ? -0.1 : 0.1)));
    $("split").value = Math.round(view.split * 100);
    apply();
  } else return;
  e.preventDefault();
});

loadModels();
checkKey();
