// Small DOM helpers shared by the views: element building (text only, never innerHTML with
// data from the API), the error banner and the polite status line.

import { describe } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

export function showError(err, where = $("alert-text")) {
  where.textContent = describe(err);
  (where.id === "alert-text" ? $("alert") : where).hidden = false;
}

export function clearError(where = $("alert-text")) {
  (where.id === "alert-text" ? $("alert") : where).hidden = true;
  where.textContent = "";
}

export function notice(text) {
  $("notice").textContent = text;
}

// Run an async action from a button: disabled while it runs, errors shown in the banner.
export async function guarded(button, action) {
  if (button) button.disabled = true;
  try {
    await action();
  } catch (err) {
    showError(err);
  } finally {
    if (button) button.disabled = false;
  }
}

export function splitList(text) {
  return text.split(/[,\s]+/).map((s) => s.trim()).filter(Boolean);
}

export function humanSize(bytes) {
  if (!bytes) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
