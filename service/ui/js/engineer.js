// The engineer page: the models in service (version, state, provider, checksum, the
// OOD gate's calibration, the latest validation report), the outbox (per destination; dead entries with their
// reason, to retry or drop), and a few key numbers from /metrics.
import { api, ApiError } from "./api.js";
import { cell, span, status } from "./dom.js";
import { formatDateTime, t } from "./i18n.js";

const KEY_METRICS = ["aidx_model_ready", "aidx_queue_depth", "aidx_outbox_entries", "aidx_feedback_answers"];

function byId(id) {
  return document.getElementById(id);
}

function ood(model) {
  if (!model.ood) return t("eng.ood_none");
  const frr = (model.ood.false_rejection_rate * 100).toFixed(1);
  return t("eng.ood_value", { threshold: model.ood.threshold.toFixed(3), frr });
}

function validation(model) {
  const latest = model.validation;
  if (!latest) return t("eng.validation_none");
  const link = document.createElement("a");
  link.href = latest.report_url;
  link.target = "_blank";
  link.rel = "noopener";
  const verdict = t(latest.card_metrics_within_ci ? "eng.validation_ok" : "eng.validation_off");
  link.textContent = `${formatDateTime(latest.created)} · n=${latest.items} · ${verdict}`;
  return link;
}

function modelRow(model) {
  const tr = document.createElement("tr");
  tr.dataset.model = model.name;
  const checksum = model.checksum_ok == null ? "—" : t(model.checksum_ok ? "eng.ok" : "eng.bad");
  const where = [model.provider, model.device].filter(Boolean).join(" · ") || "—";
  tr.append(cell(model.name + (model.demo_weights ? ` (${t("eng.demo")})` : "")),
    cell(String(model.version)), cell(span(model.state, `state-${model.state}`)), cell(where),
    cell(checksum), cell(ood(model)), cell(validation(model)));
  return tr;
}

function destinationRow([name, counts]) {
  const tr = document.createElement("tr");
  tr.dataset.destination = name;
  tr.append(cell(name), cell(String(counts.pending)), cell(String(counts.delivered)),
    cell(span(String(counts.failed), counts.failed ? "result-present" : "")),
    cell(counts.last_error ?? "—"));
  return tr;
}

function action(textKey, run) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = t(textKey);
  button.onclick = async () => {
    try {
      await run();
      await showOutbox();
    } catch (error) {
      status(t("error.generic", { code: error instanceof ApiError ? error.code : "network" }));
    }
  };
  return button;
}

function deadRow(entry) {
  const tr = document.createElement("tr");
  tr.dataset.entry = entry.id;
  const path = `/v1/outbox/${entry.id}`;
  const actions = document.createElement("span");
  actions.append(action("eng.retry", () => api(`${path}/retry`, { method: "POST" })),
    action("eng.drop", () => api(path, { method: "DELETE" })));
  tr.append(cell(entry.destination), cell(`${entry.kind} ${entry.object_key}`),
    cell(String(entry.attempts)), cell(entry.last_error ?? "—"), cell(actions));
  return tr;
}

async function showOutbox() {
  const outbox = await api("/v1/outbox?state=failed&limit=100");
  byId("eng-destinations").replaceChildren(
    ...Object.entries(outbox.destinations).map(destinationRow));
  byId("eng-dead").replaceChildren(...outbox.entries.map(deadRow));
  byId("eng-no-dead").hidden = outbox.entries.length > 0;
}

async function showMetrics() {
  const text = await (await fetch("/metrics", { credentials: "same-origin" })).text();
  const wanted = text.split("\n").filter(
    (line) => KEY_METRICS.some((name) => line.startsWith(name)) && !line.startsWith("#"));
  const list = byId("eng-metrics");
  list.replaceChildren();
  for (const line of wanted.slice(0, 40)) {
    const cut = line.lastIndexOf(" ");
    const dt = document.createElement("dt");
    dt.textContent = line.slice(0, cut);
    const dd = document.createElement("dd");
    dd.textContent = line.slice(cut + 1);
    list.append(dt, dd);
  }
}

export async function showEngineer() {
  const models = await api("/v1/models");
  byId("eng-models").replaceChildren(...models.map(modelRow));
  await Promise.all([showOutbox(), showMetrics().catch(() => null)]);
}
