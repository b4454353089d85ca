// Same-origin calls to aidx's API with the session cookie; every state-changing
// request echoes the session's CSRF token (the server refuses it otherwise: 403).
let csrfToken = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...headers } };
  if (method !== "GET" && csrfToken) init.headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 204) return null;
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new ApiError(answer.status, data.code || `http_${answer.status}`, data.message);
  return data;
}

export async function signIn(key) {
  // The key travels once, in a header (no body: the server checks keys before bodies).
  return api("/ui/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
}
