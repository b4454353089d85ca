// Small DOM helpers shared by the views.
export function status(text) {
  document.getElementById("status").textContent = text;
}

export function cell(...children) {
  const td = document.createElement("td");
  td.append(...children);
  return td;
}

export function span(text, className = "") {
  const el = document.createElement("span");
  el.textContent = text;
  if (className) el.className = className;
  return el;
}
