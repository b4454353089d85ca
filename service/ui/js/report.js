// One report: the radiograph with its heatmap layer (toggle, opacity), the findings
// with probability, threshold and present / absent / not assessed (with its reason),
// the OOD verdict, the model; and the reader's answer per finding (feedback API).
import { api, ApiError } from "./api.js";
import { cell, span } from "./dom.js";
import { apply, formatDateTime, formatPercent, label, t } from "./i18n.js";
import { hideCt, showCt } from "./ct.js";
import { showViewer } from "./viewer.js";
import { showShares } from "./share.js";

function byId(id) {
  return document.getElementById(id);
}

function showMeta(report) {
  byId("report-model").textContent = report.model.name;
  byId("report-version").textContent = String(report.model.version);
  byId("report-created").textContent = formatDateTime(report.created_at);
  const ood = report.ood;
  byId("report-ood").textContent = ood
    ? `${label("ood", ood.status)}${ood.score == null ? "" : ` (${ood.score.toFixed(3)})`}`
    : t("ood.none");
  const notAssessed = byId("report-not-assessed");
  notAssessed.hidden = !report.not_assessed;
  if (report.not_assessed) {
    notAssessed.textContent = t("report.not_assessed", {
      reason: label("na", report.not_assessed.reason),
    });
  }
  byId("report-disclaimer").hidden = !report.model.demo_weights;
}

function showImage(report) {
  const panel = byId("image-panel");
  panel.hidden = report.pipeline !== "cxr";
  if (panel.hidden) return;
  const heat = byId("heat");
  const toggle = byId("heat-toggle");
  const opacity = byId("heat-opacity");
  byId("radiograph").src = `/v1/reports/${report.id}/radiograph.png`;
  heat.src = `/v1/reports/${report.id}/heatmap.png`;
  toggle.onchange = () => { heat.hidden = !toggle.checked; };
  opacity.oninput = () => { heat.style.opacity = String(opacity.value / 100); };
  toggle.onchange();
  opacity.oninput();
  return showViewer(report);
}

function result(finding) {
  if (!finding.assessed) {
    const why = finding.not_assessed_reason ? label("na", finding.not_assessed_reason) : "";
    return span(`${t("result.not_assessed")}${why ? `: ${why}` : ""}`, "result-not-assessed");
  }
  return finding.present
    ? span(t("result.present"), "result-present")
    : span(t("result.absent"));
}

function answerForm(rid, name, mine) {
  const form = byId("answer-template").content.firstElementChild.cloneNode(true);
  form.dataset.finding = name;
  for (const radio of form.querySelectorAll("input[name=verdict]")) {
    radio.name = `verdict-${name}`;
    radio.checked = mine?.verdict === radio.value;
  }
  form.reason.value = mine?.reason ?? "";
  form.comment.value = mine?.comment ?? "";
  form.onsubmit = (event) => {
    event.preventDefault();
    sendAnswer(rid, name, form);
  };
  return form;
}

async function sendAnswer(rid, name, form) {
  const saved = form.querySelector(".saved");
  const verdict = [...form.querySelectorAll("input[type=radio]")].find((r) => r.checked)?.value;
  if (!verdict) {
    saved.textContent = t("answer.pick");
    return;
  }
  const answer = { finding: name, verdict, reason: form.reason.value || null,
    comment: form.comment.value.trim() || null };
  try {
    await api(`/v1/reports/${rid}/feedback`, { method: "POST", body: { answers: [answer] } });
    saved.textContent = t("answer.saved");
  } catch (error) {
    const code = error instanceof ApiError ? error.code : "network";
    saved.textContent = t("error.generic", { code });
  }
}

function showFindings(report, feedback, session) {
  const mine = new Map(
    feedback.current.filter((a) => a.by === session.name && a.region == null)
      .map((a) => [a.finding, a]),
  );
  const answers = session.role === feedback.owner_role;
  const rows = byId("findings-rows");
  rows.replaceChildren();
  for (const finding of report.findings) {
    const name = finding.concept.meaning;
    const tr = document.createElement("tr");
    tr.dataset.finding = name;
    const probability = finding.probability == null ? "—" : formatPercent(finding.probability);
    tr.append(
      cell(label("finding", name)),
      cell(probability),
      cell(formatPercent(finding.threshold)),
      cell(result(finding)),
      cell(answers ? answerForm(report.id, name, mine.get(name)) : span("—")),
    );
    rows.append(tr);
  }
  apply(rows); // the cloned forms' strings, in the current language
}

export async function showReport(rid, session) {
  const [report, feedback] = await Promise.all([
    api(`/v1/reports/${rid}`),
    api(`/v1/reports/${rid}/feedback`),
  ]);
  byId("report-back").href = `#/worklist/${report.pipeline}`;
  showMeta(report);
  showFindings(report, feedback, session);
  await showShares(report.id);
  // the images last: the full-resolution radiograph takes a while to arrive
  await (report.pipeline === "ct" ? showCt(rid) : hideCt());
  await showImage(report);
}
