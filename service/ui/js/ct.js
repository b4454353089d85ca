// The CT view: the series slice by slice (slider, wheel, arrow / Page / Home / End keys)
// in a chosen window, each slice with the lesions of the label map outlined by the
// server; the lesion table (volume, side, zone, key slice: a click jumps there) and
// each lung's involvement. The findings and their answers are report.js's.
import { api } from "./api.js";
import { cell, span } from "./dom.js";
import { formatPercent, label, language, t } from "./i18n.js";

let ct = null; // { rid, slices, k, lesions }
let listeners = null;

function byId(id) {
  return document.getElementById(id);
}

// Millilitres in the reader's locale (Intl's own unit names: "12.5 mL", "12,5 ml").
function millilitres(value, digits) {
  if (value == null) return t("ct.not_assessed");
  return new Intl.NumberFormat(language(), {
    style: "unit", unit: "milliliter", maximumFractionDigits: digits,
  }).format(value);
}

function setSlice(k) {
  const next = Math.min(ct.slices - 1, Math.max(0, Math.round(k)));
  ct.k = next;
  const window = byId("ct-window").value;
  byId("ct-slice").src = `/v1/ct/reports/${ct.rid}/slices/${next}.png?window=${window}`;
  byId("ct-slider").value = String(next);
  byId("ct-stage").dataset.slice = String(next);
  byId("ct-position").textContent = t("ct.position", { k: next + 1, n: ct.slices });
  for (const row of byId("ct-lesion-rows").children) {
    const [low, high] = row.dataset.range.split(",").map(Number);
    row.classList.toggle("on-slice", low <= next && next <= high);
  }
}

function lesionRow(lesion) {
  const tr = document.createElement("tr");
  tr.dataset.lesion = String(lesion.number);
  tr.dataset.keySlice = String(lesion.key_slice_k);
  tr.dataset.range = `${lesion.bbox_voxel.min_ijk[2]},${lesion.bbox_voxel.max_ijk[2]}`;
  tr.tabIndex = 0;
  tr.className = "lesion";
  tr.append(
    cell(String(lesion.number)),
    cell(millilitres(lesion.volume_ml, 2)),
    cell(label("ct.side", lesion.side)),
    cell(label("ct.zone", lesion.zone)),
    cell(String(lesion.key_slice_k + 1)),
  );
  const jump = () => {
    for (const other of tr.parentElement.children) other.removeAttribute("aria-selected");
    tr.setAttribute("aria-selected", "true");
    setSlice(lesion.key_slice_k);
  };
  tr.addEventListener("click", jump, { signal: listeners.signal });
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") jump();
  }, { signal: listeners.signal });
  return tr;
}

function lungRow(lung) {
  const tr = document.createElement("tr");
  tr.dataset.side = lung.side;
  const percent = lung.involvement_percent == null
    ? span(t("ct.not_assessed"), "result-not-assessed")
    : span(formatPercent(lung.involvement_percent / 100));
  tr.append(
    cell(label("ct.side", lung.side)),
    cell(millilitres(lung.lung_volume_ml, 0)),
    cell(millilitres(lung.involved_ml, 2)),
    cell(percent),
  );
  return tr;
}

const KEY_STEPS = { ArrowUp: -1, ArrowDown: 1, PageUp: -10, PageDown: 10 };

function onKey(event) {
  if (byId("ct-panel").hidden || event.target.closest?.("input, select, textarea")) return;
  if (event.key in KEY_STEPS) setSlice(ct.k + KEY_STEPS[event.key]);
  else if (event.key === "Home") setSlice(0);
  else if (event.key === "End") setSlice(ct.slices - 1);
  else return;
  event.preventDefault();
}

function wire(signal) {
  byId("ct-slider").addEventListener("input", () => setSlice(Number(byId("ct-slider").value)),
    { signal });
  byId("ct-window").addEventListener("change", () => setSlice(ct.k), { signal });
  byId("ct-stage").addEventListener("wheel", (event) => {
    event.preventDefault();
    setSlice(ct.k + Math.sign(event.deltaY));
  }, { signal, passive: false });
  document.addEventListener("keydown", onKey, { signal });
}

export function hideCt() {
  listeners?.abort();
  listeners = null;
  for (const id of ["ct-panel", "ct-tables"]) byId(id).hidden = true;
}

export async function showCt(rid) {
  hideCt();
  listeners = new AbortController();
  const report = await api(`/v1/ct/reports/${rid}`);
  ct = { rid, slices: report.slices, k: 0 };
  byId("ct-slider").max = String(Math.max(0, report.slices - 1));
  byId("ct-lesion-rows").replaceChildren(...report.lesions.map(lesionRow));
  byId("ct-no-lesions").hidden = report.lesions.length > 0;
  byId("ct-lung-rows").replaceChildren(...report.lungs.map(lungRow));
  wire(listeners.signal);
  for (const id of ["ct-panel", "ct-tables"]) byId(id).hidden = false;
  const first = report.lesions[0];
  setSlice(first ? first.key_slice_k : Math.floor(report.slices / 2));
}
