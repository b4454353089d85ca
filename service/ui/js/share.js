// Share one report by a QR code: a signed, expiring, read-only link the reader can
// revoke (POST/GET/DELETE /v1/reports/{id}/shares). The QR image is drawn by the server.
import { api, ApiError } from "./api.js";
import { cell, span, status } from "./dom.js";
import { formatDateTime, label, t } from "./i18n.js";

function byId(id) {
  return document.getElementById(id);
}

function revokeButton(rid, share) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "share-revoke";
  button.textContent = t("share.revoke");
  button.onclick = async () => {
    await api(`/v1/reports/${rid}/shares/${share.share_id}`, { method: "DELETE" });
    await listShares(rid);
  };
  return button;
}

async function listShares(rid) {
  const shares = await api(`/v1/reports/${rid}/shares`);
  const rows = byId("share-rows");
  rows.replaceChildren();
  for (const share of shares) {
    const tr = document.createElement("tr");
    tr.dataset.share = share.share_id;
    tr.append(
      cell(share.created_by),
      cell(formatDateTime(share.expires_at)),
      cell(span(label("share.state", share.state), `share-${share.state}`)),
      cell(share.state === "live" ? revokeButton(rid, share) : ""),
    );
    rows.append(tr);
  }
}

async function createShare(rid) {
  try {
    const share = await api(`/v1/reports/${rid}/shares`, { method: "POST", body: {} });
    byId("share-qr").src = share.qr_url;
    const link = byId("share-url");
    link.href = share.url;
    link.textContent = share.url;
    byId("share-new").hidden = false;
    await listShares(rid);
  } catch (error) {
    status(t("error.generic", { code: error instanceof ApiError ? error.code : "network" }));
  }
}

export async function showShares(rid) {
  byId("share-new").hidden = true;
  byId("share-create").onclick = () => createShare(rid);
  await listShares(rid);
}
