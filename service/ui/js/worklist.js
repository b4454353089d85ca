// A kind's worklist: STAT first, then a finding present, then newest; filters; keyset
// paging ("more" fetches the page after the last row shown).
import { api } from "./api.js";
import { cell, span } from "./dom.js";
import { formatDateTime, label, t } from "./i18n.js";

let kind = null;
let cursor = null;

function query(after) {
  const params = new URLSearchParams({ kind, limit: "50" });
  const fields = { review: "filter-review", model: "filter-model", date_from: "filter-from",
    date_to: "filter-to" };
  for (const [name, id] of Object.entries(fields)) {
    const value = document.getElementById(id).value.trim();
    if (value) params.set(name, value);
  }
  if (after) params.set("cursor", after);
  return `/v1/reports?${params}`;
}

function badges(item) {
  const out = [];
  if (item.stat) out.push(span(t("badge.stat"), "badge stat"));
  if (item.positive) out.push(span(t("badge.positive"), "badge positive"));
  if (!item.assessed) out.push(span(t("badge.not_assessed"), "badge not-assessed"));
  return out;
}

function row(item) {
  const tr = document.createElement("tr");
  tr.dataset.reportId = item.id;
  const open = document.createElement("a");
  open.href = `#/${kind === "wsi" ? "slide" : "report"}/${item.id}`; // slides: the slide viewer
  open.textContent = t("worklist.open");
  tr.append(
    cell(...badges(item)),
    cell(formatDateTime(item.created_at)),
    cell(item.patient_id ?? "—"),
    cell(`${item.model_name} v${item.model_version}`),
    cell(label("review", item.review)),
    cell(open),
  );
  return tr;
}

async function load(first) {
  const page = await api(query(first ? null : cursor));
  const rows = document.getElementById("worklist-rows");
  if (first) rows.replaceChildren();
  rows.append(...page.items.map(row));
  cursor = page.next_cursor;
  document.getElementById("worklist-more").hidden = !cursor;
  document.getElementById("worklist-empty").hidden = rows.children.length > 0;
}

export async function showWorklist(nextKind) {
  kind = nextKind;
  document.getElementById("worklist-heading").textContent = t(`kind.${kind}`);
  document.getElementById("filters").onsubmit = (event) => {
    event.preventDefault();
    load(true);
  };
  document.getElementById("worklist-more").onclick = () => load(false);
  await load(true);
}
