// The CXR viewer: the radiograph at full resolution on a canvas, with pan (drag), zoom
// (wheel, about the pointer), reset, and window/level applied to the real pixels: the
// full-resolution modality values (uint16, /radiograph16.raw) go through a lookup
// table of the window into the canvas's image data, never through a CSS filter.
// Window/level: the sliders, the presets, or Shift+drag (across: width, down: level).
// The heatmap layer (an <img>, toggled and faded by report.js) follows the same
// transform in CSS, so it stays in register; the hot-region boxes are drawn on top.
import { ApiError } from "./api.js";
import { label, t } from "./i18n.js";

const MIN_ZOOM_OF_FIT = 0.25;
const MAX_ZOOM = 16; // screen pixels per image pixel
const WHEEL_RATE = 0.0015;
const DRAG_WL_RATE = 1 / 400; // of the value range per screen pixel
// Width factors of the default window (the header's, else a robust one); full: the range.
const PRESETS = { default: 1, full: null, contrast: 0.5, wide: 2 };

let view = null; // the current report's viewer state
let listeners = null; // AbortController of the current viewer's event listeners

function byId(id) {
  return document.getElementById(id);
}

async function fetchBinary(path) {
  const answer = await fetch(path, { credentials: "same-origin" });
  if (!answer.ok) {
    const data = await answer.json().catch(() => ({}));
    throw new ApiError(answer.status, data.code || `http_${answer.status}`, data.message);
  }
  return answer;
}

// The full-resolution pixels and their meta; null for a report analysed before they
// were kept (the viewer then windows the 8-bit radiograph layer).
async function fullImage(rid) {
  try {
    const meta = await (await fetchBinary(`/v1/reports/${rid}/radiograph16.json`)).json();
    const buffer = await (await fetchBinary(`/v1/reports/${rid}/radiograph16.raw`)).arrayBuffer();
    if (buffer.byteLength !== meta.rows * meta.columns * 2) return null;
    return { meta, pixels: new Uint16Array(buffer), source: "full" };
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

function imageLoaded(img) {
  if (img.complete && img.naturalWidth) return Promise.resolve();
  return new Promise((resolve, reject) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", reject, { once: true });
  });
}

async function overlayImage() {
  const img = byId("radiograph");
  await imageLoaded(img);
  const scratch = document.createElement("canvas");
  scratch.width = img.naturalWidth;
  scratch.height = img.naturalHeight;
  const ctx = scratch.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, scratch.width, scratch.height).data;
  const pixels = new Uint16Array(scratch.width * scratch.height);
  for (let i = 0; i < pixels.length; i += 1) pixels[i] = rgba[4 * i] * 257;
  const meta = { rows: scratch.height, columns: scratch.width, value_min: 0, value_max: 255,
    window_center: 127.5, window_width: 255, invert: false };
  return { meta, pixels, source: "overlay" };
}

// The window's lookup table: uint16 code -> opaque grey RGBA (little-endian words).
function windowTable(meta, center, width) {
  const table = new Uint32Array(65536);
  const step = (meta.value_max - meta.value_min) / 65535;
  const low = center - width / 2;
  for (let code = 0; code < 65536; code += 1) {
    const v = meta.value_min + code * step;
    let g = Math.round(Math.min(1, Math.max(0, (v - low) / width)) * 255);
    if (meta.invert) g = 255 - g;
    table[code] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  return table;
}

function applyWindow() {
  const { meta, pixels, image } = view;
  const table = windowTable(meta, view.center, view.width);
  const data = image.getImageData(0, 0, meta.columns, meta.rows);
  const words = new Uint32Array(data.data.buffer);
  for (let i = 0; i < pixels.length; i += 1) words[i] = table[pixels[i]];
  image.putImageData(data, 0, 0);
  showWindow();
  draw();
}

function showWindow() {
  byId("wl-center").value = String(view.center);
  byId("wl-width").value = String(view.width);
  byId("wl-values").textContent = t("viewer.window_values", {
    level: Math.round(view.center), width: Math.round(view.width),
  });
  byId("xray-canvas").dataset.window = `${view.center.toFixed(2)},${view.width.toFixed(2)}`;
}

function drawBoxes(ctx) {
  if (!byId("boxes-toggle").checked) return;
  ctx.lineWidth = 2 / view.zoom;
  ctx.strokeStyle = "#ffd400";
  ctx.fillStyle = "#ffd400";
  ctx.font = `${14 / view.zoom}px system-ui, sans-serif`;
  for (const box of view.boxes) {
    const [x0, y0, x1, y1] = box.xyxy.map((v) => v * view.pxScale);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.fillText(box.name, x0, y0 - 4 / view.zoom);
  }
}

function draw() {
  const canvas = byId("xray-canvas");
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.setTransform(view.zoom, 0, 0, view.zoom, view.x, view.y);
  ctx.imageSmoothingEnabled = view.zoom < 1;
  ctx.drawImage(view.image.canvas, 0, 0);
  drawBoxes(ctx);
  const heat = byId("heat");
  heat.style.width = `${view.meta.columns}px`;
  heat.style.height = `${view.meta.rows}px`;
  heat.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  canvas.dataset.zoom = view.zoom.toFixed(4);
  canvas.dataset.pan = `${Math.round(view.x)},${Math.round(view.y)}`;
}

function fit() {
  const canvas = byId("xray-canvas");
  const box = byId("viewport").getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(box.width));
  canvas.height = Math.max(1, Math.round(box.height));
  const { rows, columns } = view.meta;
  view.fitZoom = Math.min(canvas.width / columns, canvas.height / rows);
  view.zoom = view.fitZoom;
  view.x = (canvas.width - columns * view.zoom) / 2;
  view.y = (canvas.height - rows * view.zoom) / 2;
}

function zoomAbout(px, py, factor) {
  const next = Math.min(MAX_ZOOM, Math.max(view.fitZoom * MIN_ZOOM_OF_FIT, view.zoom * factor));
  const applied = next / view.zoom;
  view.x = px - (px - view.x) * applied;
  view.y = py - (py - view.y) * applied;
  view.zoom = next;
  draw();
}

function setWindow(center, width) {
  const span = view.meta.value_max - view.meta.value_min;
  view.width = Math.min(span * 2, Math.max(span / 1000, width));
  view.center = Math.min(view.meta.value_max, Math.max(view.meta.value_min, center));
  applyWindow();
}

function usePreset(name) {
  const { meta } = view;
  const span = meta.value_max - meta.value_min;
  const preset = PRESETS[name];
  if (preset === undefined) return;
  if (preset === null) return setWindow(meta.value_min + span / 2, span);
  setWindow(meta.window_center, meta.window_width * preset);
}

function onWheel(event) {
  event.preventDefault();
  const box = byId("xray-canvas").getBoundingClientRect();
  zoomAbout(event.clientX - box.left, event.clientY - box.top, Math.exp(-event.deltaY * WHEEL_RATE));
}

function onDrag(canvas, signal) {
  let last = null;
  canvas.addEventListener("pointerdown", (event) => {
    last = { x: event.clientX, y: event.clientY, windowing: event.shiftKey };
    canvas.setPointerCapture(event.pointerId);
  }, { signal });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const dx = event.clientX - last.x;
    const dy = event.clientY - last.y;
    last = { ...last, x: event.clientX, y: event.clientY };
    if (last.windowing) {
      const span = view.meta.value_max - view.meta.value_min;
      byId("wl-preset").value = "custom";
      setWindow(view.center + dy * span * DRAG_WL_RATE, view.width + dx * span * DRAG_WL_RATE);
    } else {
      view.x += dx;
      view.y += dy;
      draw();
    }
  }, { signal });
  const stop = () => { last = null; };
  canvas.addEventListener("pointerup", stop, { signal });
  canvas.addEventListener("pointercancel", stop, { signal });
}

function wireControls(signal) {
  const canvas = byId("xray-canvas");
  canvas.addEventListener("wheel", onWheel, { signal, passive: false });
  onDrag(canvas, signal);
  const sliders = () => {
    byId("wl-preset").value = "custom";
    setWindow(Number(byId("wl-center").value), Number(byId("wl-width").value));
  };
  byId("wl-center").addEventListener("input", sliders, { signal });
  byId("wl-width").addEventListener("input", sliders, { signal });
  byId("wl-preset").addEventListener("change", () => usePreset(byId("wl-preset").value), { signal });
  byId("boxes-toggle").addEventListener("change", draw, { signal });
  byId("view-reset").addEventListener("click", () => {
    byId("wl-preset").value = "default";
    fit();
    usePreset("default");
  }, { signal });
  window.addEventListener("resize", () => { fit(); draw(); }, { signal });
}

function sliderRanges(meta) {
  const span = meta.value_max - meta.value_min;
  const center = byId("wl-center");
  const width = byId("wl-width");
  center.min = String(meta.value_min);
  center.max = String(meta.value_max);
  width.min = String(span / 1000);
  width.max = String(span * 2);
  center.step = width.step = String(span / 1000);
}

// The hot regions of the findings present, in original pixels, with their names.
function regionBoxes(report) {
  const boxes = [];
  for (const finding of report.findings) {
    if (!finding.present) continue;
    const name = label("finding", finding.concept.meaning);
    for (const r of finding.regions ?? []) {
      boxes.push({ name, xyxy: [r.x_min_px, r.y_min_px, r.x_max_px, r.y_max_px] });
    }
  }
  return boxes;
}

export async function showViewer(report) {
  listeners?.abort();
  listeners = new AbortController();
  const loaded = (await fullImage(report.id)) ?? (await overlayImage());
  const { meta } = loaded;
  const image = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  image.canvas.width = meta.columns;
  image.canvas.height = meta.rows;
  view = { ...loaded, image, boxes: regionBoxes(report),
    pxScale: report.source?.rows ? meta.rows / report.source.rows : 1 };
  byId("xray-canvas").dataset.source = loaded.source;
  sliderRanges(meta);
  wireControls(listeners.signal);
  byId("wl-preset").value = "default";
  fit();
  usePreset("default");
}
