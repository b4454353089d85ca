// Message catalogues (../i18n/<lang>.json): every visible string goes through t().
// Elements name their string with data-i18n (text), data-i18n-alt, data-i18n-placeholder.
const LANGS = ["en", "vi"];
const STORE_KEY = "aidx.lang";
let lang = "en";
let messages = {};

export function chosenLanguage() {
  const saved = localStorage.getItem(STORE_KEY);
  if (LANGS.includes(saved)) return saved;
  const browser = (navigator.language || "en").slice(0, 2).toLowerCase();
  return LANGS.includes(browser) ? browser : "en";
}

export async function useLanguage(next) {
  const answer = await fetch(`i18n/${next}.json`, { credentials: "same-origin" });
  messages = await answer.json();
  lang = next;
  localStorage.setItem(STORE_KEY, next);
  document.documentElement.lang = next;
  apply(document);
}

export function language() {
  return lang;
}

// The message for `key`, with {name} placeholders filled; the key itself when missing
// (a test keeps both catalogues complete, so a user never sees one).
export function t(key, vars = {}) {
  const text = messages[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

// A coded value's label ("reason.image_quality"), or the raw value when uncoded.
export function label(prefix, code) {
  const key = `${prefix}.${code}`;
  return key in messages ? messages[key] : String(code);
}

export function apply(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}

export function formatDateTime(iso) {
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" })
    .format(new Date(iso));
}

export function formatPercent(value) {
  return new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 })
    .format(value);
}
