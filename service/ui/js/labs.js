// The lab technician's console: open alerts and the review queue, live over
// Server-Sent Events (EventSource resends Last-Event-ID on reconnecting, and the
// server replays what was missed), critical first, with a visual and an optional sound
// cue; a click shows the specimen's detail (rule, values, the reference interval used,
// the previous result and its time) and acknowledges it with a reason.
import { api, ApiError } from "./api.js";
import { cell, span } from "./dom.js";
import { formatDateTime, label, t } from "./i18n.js";

const SOUND_KEY = "aidx.labs.sound";
const REVIEW_RULE = "review";
const alerts = new Map(); // id -> alert, the open ones
let stream = null;
let selected = null;

function byId(id) {
  return document.getElementById(id);
}

function ordered(list) {
  // critical first, then newest
  return list.sort((a, b) => (a.severity === "critical" ? 0 : 1) - (b.severity === "critical" ? 0 : 1)
    || b.seq - a.seq);
}

function what(alert) {
  const rule = label("labs.rule", alert.rule);
  return alert.analyte ? `${alert.analyte}: ${rule}` : rule;
}

function row(alert, fresh) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = alert.id;
  tr.className = `severity-${alert.severity}${fresh ? " fresh" : ""}`;
  if (alert.id === selected) tr.setAttribute("aria-selected", "true");
  tr.tabIndex = 0;
  tr.append(
    cell(span(label("labs.severity", alert.severity), `badge-${alert.severity}`)),
    cell(formatDateTime(alert.created_at)),
    cell(alert.patient_id),
    cell(alert.specimen_id),
    cell(what(alert)),
  );
  tr.onclick = () => showDetail(alert.id);
  tr.onkeydown = (event) => { if (event.key === "Enter") showDetail(alert.id); };
  return tr;
}

function render(freshId = null) {
  const open = ordered([...alerts.values()]);
  byId("labs-alerts").replaceChildren(
    ...open.filter((a) => a.rule !== REVIEW_RULE).map((a) => row(a, a.id === freshId)),
  );
  byId("labs-review").replaceChildren(
    ...open.filter((a) => a.rule === REVIEW_RULE).map((a) => row(a, a.id === freshId)),
  );
}

function beep() {
  if (!byId("labs-sound").checked) return;
  const audio = new AudioContext();
  const tone = audio.createOscillator();
  tone.frequency.value = 880;
  tone.connect(audio.destination);
  tone.start();
  tone.stop(audio.currentTime + 0.25);
  tone.onended = () => audio.close();
}

function onAlert(event) {
  const alert = JSON.parse(event.data);
  if (alert.state !== "open") return;
  alerts.set(alert.id, alert);
  render(alert.id);
  if (alert.severity === "critical") beep();
}

function live(state) {
  const badge = byId("labs-live");
  badge.dataset.state = state;
  badge.textContent = t(`labs.live.${state}`);
}

function connect(lastSeq) {
  // The first connection starts after the alerts listed; later ones resume by
  // Last-Event-ID, which EventSource sends by itself.
  stream = new EventSource(`/v1/labs/alerts/stream?after=${lastSeq}`, { withCredentials: true });
  stream.onopen = () => live("on");
  stream.onerror = () => live("reconnecting");
  stream.addEventListener("alert", onAlert);
}

async function loadOpen() {
  alerts.clear();
  let after = 0;
  for (;;) {
    const page = await api(`/v1/labs/alerts?state=open&after=${after}&limit=1000`);
    for (const alert of page.alerts) alerts.set(alert.id, alert);
    if (page.next_after == null) return Math.max(after, ...page.alerts.map((a) => a.seq));
    after = page.next_after;
  }
}

// Which interval applied, as the catalogue partitions them (sex, age band): the same
// words as the server's reasons ("child 10 d–18 y"), in the chosen language.
const NEWBORN_Y = 1 / 12;
const ADULT_Y = 18;
const LAST_AGE_Y = 150;
const EPS_Y = 1e-6;
const AGE_UNITS = [["y", 1], ["mo", 1 / 12], ["d", 1 / 365.25], ["h", 1 / 8766]];

function ageText(years) {
  for (const [unit, per] of AGE_UNITS) {
    const count = years / per;
    if (Math.abs(count - Math.round(count)) < 1e-6 * Math.max(1, count)) {
      return t(`labs.age.${unit}`, { n: Math.round(count) });
    }
  }
  return t("labs.age.y", { n: years.toFixed(2) });
}

function ages(from, to) {
  const fromBirth = from <= EPS_Y;
  const onwards = to >= LAST_AGE_Y - EPS_Y;
  if (fromBirth && onwards) return t("labs.ages.all");
  if (fromBirth) return t("labs.ages.under", { age: ageText(to) });
  if (onwards) return t("labs.ages.from", { age: ageText(from) });
  return t("labs.ages.between", { from: ageText(from), to: ageText(to) });
}

function group(from, to) {
  if (to <= NEWBORN_Y + EPS_Y) return t("labs.group.newborn");
  if (to <= ADULT_Y + EPS_Y) return t("labs.group.child");
  return from >= ADULT_Y - EPS_Y ? t("labs.group.adult") : "";
}

function partition(interval) {
  const sex = interval.sex === "any" ? "" : label("labs.sex", interval.sex);
  const words = [sex, group(interval.age_from_y, interval.age_to_y),
    ages(interval.age_from_y, interval.age_to_y)];
  return words.filter(Boolean).join(" ");
}

function reference(value) {
  const low = value.reference_low ?? "";
  const high = value.reference_high ?? "";
  if (low === "" && high === "") return ["—"];
  const range = `${low}–${high} ${value.unit_canonical ?? value.unit ?? ""}`;
  const interval = value.reference_interval;
  if (!interval) return [range];
  const applies = span(
    t("labs.reference.applies", { partition: partition(interval), source: interval.source_name }),
    "reference-interval",
  );
  applies.title = interval.source_citation; // the full citation on hover
  return [range, document.createElement("br"), applies];
}

function previous(value) {
  const before = value.previous;
  if (!before) return "—";
  return `${before.value} ${before.unit} (${formatDateTime(before.collected_at)}, ${before.specimen_id})`;
}

function valueRow(value) {
  const tr = document.createElement("tr");
  const shown = `${value.comparator ?? ""}${value.value ?? "—"} ${value.unit ?? ""}`;
  const flag = value.interpretation ? ` (${value.interpretation})` : "";
  const reason = value.not_assessed_message ? ` — ${value.not_assessed_message}` : "";
  tr.append(cell(value.analyte ?? value.code ?? "—"), cell(`${shown}${flag}${reason}`),
    cell(...reference(value)), cell(previous(value)));
  return tr;
}

async function showDetail(id) {
  const alert = await api(`/v1/labs/alerts/${id}`); // an audited read
  selected = id;
  render();
  byId("labs-detail").hidden = false;
  byId("labs-detail-message").textContent = alert.message;
  byId("labs-detail-rule").textContent = label("labs.rule", alert.rule);
  byId("labs-detail-patient").textContent = alert.patient_id;
  byId("labs-detail-specimen").textContent = alert.specimen_id;
  byId("labs-detail-collected").textContent = alert.evidence.collected_at
    ? formatDateTime(alert.evidence.collected_at) : "—";
  byId("labs-detail-values").replaceChildren(...(alert.evidence.values ?? []).map(valueRow));
  const form = byId("labs-ack");
  form.dataset.alertId = id;
  form.querySelector(".saved").textContent = "";
  form.reason.value = "";
}

async function acknowledge(event) {
  event.preventDefault();
  const form = event.target;
  const id = form.dataset.alertId;
  try {
    await api(`/v1/labs/alerts/${id}/ack`, { method: "POST", body: { reason: form.reason.value } });
    alerts.delete(id);
    selected = null;
    byId("labs-detail").hidden = true;
    render();
  } catch (error) {
    const code = error instanceof ApiError ? error.code : "network";
    form.querySelector(".saved").textContent = t("error.generic", { code });
  }
}

export function stopLabs() {
  if (stream) stream.close();
  stream = null;
}

export async function showLabs() {
  stopLabs();
  const sound = byId("labs-sound");
  sound.checked = localStorage.getItem(SOUND_KEY) === "on";
  sound.onchange = () => localStorage.setItem(SOUND_KEY, sound.checked ? "on" : "off");
  byId("labs-ack").onsubmit = acknowledge;
  byId("labs-detail").hidden = true;
  live("connecting");
  const lastSeq = await loadOpen();
  render();
  connect(lastSeq);
}
