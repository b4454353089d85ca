// The workspace's shell: language, session, role-based navigation, and the router
// (#/worklist/<kind>, #/report/<id>, #/engineer; the labs worklist is the live console).
import { api, ApiError, setCsrfToken, signIn } from "./api.js";
import { chosenLanguage, t, useLanguage } from "./i18n.js";
import { showEngineer } from "./engineer.js";
import { showLabs, stopLabs } from "./labs.js";
import { showReport } from "./report.js";
import { showSlide } from "./slide.js";
import { showWorklist } from "./worklist.js";
import { status } from "./dom.js";

const WORKLISTS = new Set(["cxr", "ct", "wsi"]); // the lab console and engineer page are views
let session = null;

function show(viewId) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== viewId;
  document.getElementById("status").textContent = "";
}

function renderNav() {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  for (const kind of session.views) {
    const link = document.createElement("a");
    link.href = kind === "engineer" ? "#/engineer" : `#/worklist/${kind}`;
    link.dataset.i18n = `kind.${kind}`;
    link.id = `nav-${kind}`;
    link.textContent = t(`kind.${kind}`);
    nav.append(link);
  }
  document.getElementById("who").textContent = t("session.who", {
    name: session.name, role: t(`role.${session.role}`),
  });
  document.getElementById("sign-out").hidden = false;
}

async function route() {
  if (!session) return showSignIn();
  const [, page, arg] = location.hash.split("/");
  for (const a of document.querySelectorAll("#nav a")) {
    a.toggleAttribute("aria-current", a.getAttribute("href") === location.hash);
  }
  try {
    if (!(page === "worklist" && arg === "labs")) stopLabs();
    if (page === "report" && arg) {
      show("view-report");
      await showReport(arg, session);
    } else if (page === "slide" && arg) {
      show("view-slide");
      await showSlide(arg, session);
    } else if (page === "worklist" && arg === "labs" && session.views.includes(arg)) {
      show("view-labs");
      await showLabs();
    } else if (page === "engineer" && session.views.includes("engineer")) {
      show("view-engineer");
      await showEngineer();
    } else if (page === "worklist" && session.views.includes(arg) && WORKLISTS.has(arg)) {
      show("view-worklist");
      await showWorklist(arg);
    } else if (page === "worklist" && session.views.includes(arg)) {
      show("view-later");
      document.getElementById("later-heading").textContent = t(`kind.${arg}`);
    } else if (session.views.length) {
      const first = session.views[0];
      location.hash = first === "engineer" ? "#/engineer" : `#/worklist/${first}`;
    } else {
      show("view-later");
    }
  } catch (error) {
    onError(error);
  }
}

function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    session = null;
    return showSignIn();
  }
  const code = error instanceof ApiError ? error.code : "network";
  status(t("error.generic", { code }));
}

function showSignIn() {
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").textContent = "";
  document.getElementById("sign-out").hidden = true;
  show("view-signin");
}

async function onSignIn(event) {
  event.preventDefault();
  const field = document.getElementById("signin-key");
  const error = document.getElementById("signin-error");
  error.textContent = "";
  try {
    startSession(await signIn(field.value));
    field.value = "";
    await route();
  } catch (failure) {
    error.textContent = t(failure instanceof ApiError ? "signin.refused" : "error.network");
  }
}

function startSession(info) {
  session = info;
  setCsrfToken(info.csrf_token);
  renderNav();
}

async function onSignOut() {
  await api("/ui/session", { method: "DELETE" }).catch(() => null);
  stopLabs();
  session = null;
  setCsrfToken(null);
  location.hash = "";
  showSignIn();
}

async function boot() {
  const select = document.getElementById("lang");
  select.value = chosenLanguage();
  await useLanguage(select.value);
  select.addEventListener("change", async () => {
    await useLanguage(select.value);
    if (session) renderNav();
    await route();
  });
  document.getElementById("signin-form").addEventListener("submit", onSignIn);
  document.getElementById("sign-out").addEventListener("click", onSignOut);
  window.addEventListener("hashchange", route);
  try {
    startSession(await api("/ui/session"));
  } catch {
    session = null;
  }
  await route();
}

boot();
