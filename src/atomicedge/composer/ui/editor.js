// The blueprint editor: details, packages (searched in the server's apt sources through
// projects/info), users, firewall ports and services. "Commit" pushes the whole blueprint
// (blueprints/new); the server bumps the patch version as osbuild-composer does when the
// version is unchanged. Keys the editor does not show are kept as they were.

import { ApiError, call, get } from "./api.js";
import { $, clearError, guarded, h, notice, showError, splitList } from "./dom.js";

const SEARCH_LIMIT = 200;
let bp = null;          // the blueprint being edited (a deep copy)
let committed = null;   // what the server holds (null for a new, uncommitted blueprint)
let onChange = () => {};

const clone = (value) => JSON.parse(JSON.stringify(value));
const custom = () => (bp.customizations = bp.customizations || {});

export function initEditor(changed) {
  onChange = changed;
  $("package-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(ev.submitter, search);
  });
  $("user-add").addEventListener("click", addUser);
  $("commit").addEventListener("click", confirmCommit);
  $("editor-close").addEventListener("click", closeEditor);
  for (const id of ["bp-description", "bp-hostname", "fw-ports", "svc-enabled", "svc-disabled"]) {
    $(id).addEventListener("input", markDirty);
  }
}

export const editing = () => (bp ? bp.name : null);

export async function openEditor(name) {
  const info = await get(`blueprints/info/${encodeURIComponent(name)}`);
  if (info.errors && info.errors.length) throw new ApiError(200, info.errors);
  committed = clone(info.blueprints[0]);
  show(clone(committed));
}

export function newBlueprint(name) {
  committed = null;
  show({ name, description: "", version: "0.0.1", packages: [], modules: [], groups: [],
    customizations: {} });
  markDirty();
}

function show(blueprint) {
  bp = blueprint;
  clearError();
  const c = bp.customizations || {};
  $("editor-heading").textContent = `Blueprint ${bp.name}`;
  $("editor-version").textContent = bp.version || "";
  $("bp-description").value = bp.description || "";
  $("bp-hostname").value = c.hostname || "";
  $("fw-ports").value = ((c.firewall || {}).ports || []).join(", ");
  $("svc-enabled").value = ((c.services || {}).enabled || []).join(", ");
  $("svc-disabled").value = ((c.services || {}).disabled || []).join(", ");
  $("editor-dirty").hidden = true;
  $("search-rows").replaceChildren();
  $("search-note").textContent = "";
  renderPackages();
  renderUsers();
  $("blueprints-view").hidden = true;
  $("editor").hidden = false;
  $("package-filter").focus();
}

export function closeEditor() {
  bp = null;
  $("editor").hidden = true;
  $("blueprints-view").hidden = false;
}

function markDirty() {
  $("editor-dirty").hidden = false;
}

// ---- packages -------------------------------------------------------------------------

function selected() {
  return [...(bp.packages || []).map((p) => ({ ...p, key: "packages" })),
    ...(bp.modules || []).map((p) => ({ ...p, key: "modules" }))];
}

function renderPackages() {
  const items = selected().sort((a, b) => a.name.localeCompare(b.name));
  $("selected-packages").replaceChildren(...items.map((p) => h("li", {},
    h("span", { class: "pkg" }, p.name),
    p.version && p.version !== "*" ? h("span", { class: "ver" }, ` ${p.version}`) : null,
    h("button", { type: "button", class: "icon", "aria-label": `Remove ${p.name}`,
      title: `Remove ${p.name}`, onclick: () => removePackage(p) }, "−"))));
  if (!items.length) $("selected-packages").append(h("li", { class: "empty" }, "none"));
  for (const button of $("search-rows").querySelectorAll("button[data-name]")) {
    markAdded(button);
  }
}

function has(name) {
  return selected().some((p) => p.name === name);
}

function removePackage(pkg) {
  bp[pkg.key] = (bp[pkg.key] || []).filter((p) => p.name !== pkg.name);
  markDirty();
  renderPackages();
  notice(`Removed ${pkg.name} from ${bp.name} (not committed yet)`);
}

function addPackage(name) {
  if (has(name)) return;
  bp.packages = [...(bp.packages || []), { name, version: "*" }];
  markDirty();
  renderPackages();
  notice(`Added ${name} to ${bp.name} (not committed yet)`);
}

function markAdded(button) {
  const added = has(button.dataset.name);
  button.disabled = added;
  button.textContent = added ? "✓" : "+";
  button.title = added ? `${button.dataset.name} is in the blueprint` : `Add ${button.dataset.name}`;
}

export function debianVersion(info) {
  const b = (info.builds || [])[0];
  if (!b) return "";
  let ver = b.source && b.source.version ? b.source.version : "";
  if (b.release) ver += `-${b.release}`;
  return b.epoch ? `${b.epoch}:${ver}` : ver;
}

async function search() {
  const term = $("package-filter").value.trim();
  $("search-rows").replaceChildren();
  if (!term) {
    $("search-note").textContent = "Type part of a package name.";
    return;
  }
  if (!/^[A-Za-z0-9.+*?_\-[\]]+$/.test(term)) {
    $("search-note").textContent = "Package names hold letters, digits and . + - only.";
    return;
  }
  const pattern = /[*?[]/.test(term) ? term : `*${term}*`;
  $("search-note").textContent = `Searching for ${term}…`;
  let projects = [];
  try {
    projects = (await get(`projects/info/${encodeURIComponent(pattern)}`)).projects || [];
  } catch (err) {
    const ids = (err.errors || []).map((e) => e.id);
    if (!ids.includes("UnknownProject")) throw err;
  }
  projects.sort((a, b) => rank(a.name, term) - rank(b.name, term) || a.name.localeCompare(b.name));
  const shown = projects.slice(0, SEARCH_LIMIT);
  $("search-rows").replaceChildren(...shown.map((p) => {
    const add = h("button", { type: "button", class: "icon", "data-name": p.name,
      "aria-label": `Add ${p.name}`, onclick: () => addPackage(p.name) }, "+");
    markAdded(add);
    return h("tr", { "data-package": p.name },
      h("th", { scope: "row" }, p.name), h("td", {}, debianVersion(p)),
      h("td", { title: p.description || "" }, p.summary || ""), h("td", {}, add));
  }));
  $("search-note").textContent = projects.length === 0 ? `No package matches ${term}.`
    : projects.length === 1 ? `1 package matches ${term}.`
      : projects.length > shown.length ? `${projects.length} packages match ${term}; ` +
        `the first ${shown.length} are shown.` : `${projects.length} packages match ${term}.`;
}

function rank(name, term) {
  return name === term ? 0 : name.startsWith(term) ? 1 : 2;
}

// ---- users ----------------------------------------------------------------------------

function renderUsers() {
  const users = custom().user || [];
  $("user-rows").replaceChildren(...users.map((u) => h("tr", {},
    h("th", { scope: "row" }, u.name), h("td", {}, (u.groups || []).join(", ")),
    h("td", {}, u.password ? "set" : "—"), h("td", {}, u.key ? "set" : "—"),
    h("td", {}, h("button", { type: "button", class: "icon", "aria-label": `Remove user ${u.name}`,
      onclick: () => removeUser(u.name) }, "−")))));
}

function addUser() {
  const name = $("user-name").value.trim();
  if (!/^[a-z_][a-z0-9_-]*\$?$/.test(name)) {
    showError(new Error(`user name ${JSON.stringify(name)}: use lower-case letters, digits, ` +
      "'_' and '-', starting with a letter"));
    return;
  }
  const user = { name };
  const groups = splitList($("user-groups").value);
  if (groups.length) user.groups = groups;
  if ($("user-password").value) user.password = $("user-password").value;
  if ($("user-key").value.trim()) user.key = $("user-key").value.trim();
  custom().user = [...(custom().user || []).filter((u) => u.name !== name), user];
  for (const id of ["user-name", "user-password", "user-groups", "user-key"]) $(id).value = "";
  markDirty();
  renderUsers();
  notice(`Added user ${name} (not committed yet)`);
}

function removeUser(name) {
  custom().user = (custom().user || []).filter((u) => u.name !== name);
  markDirty();
  renderUsers();
}

// ---- commit ---------------------------------------------------------------------------

function setOrDrop(obj, key, value) {
  if (value === "" || (Array.isArray(value) && !value.length) ||
      (value && typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length)) {
    delete obj[key];
  } else {
    obj[key] = value;
  }
}

function collect() {
  const out = clone(bp);
  out.description = $("bp-description").value.trim();
  const c = out.customizations || {};
  setOrDrop(c, "hostname", $("bp-hostname").value.trim());
  const fw = { ...(c.firewall || {}) };
  setOrDrop(fw, "ports", splitList($("fw-ports").value));
  setOrDrop(c, "firewall", fw);
  const svc = { ...(c.services || {}) };
  setOrDrop(svc, "enabled", splitList($("svc-enabled").value));
  setOrDrop(svc, "disabled", splitList($("svc-disabled").value));
  setOrDrop(c, "services", svc);
  setOrDrop(out, "customizations", c);
  return out;
}

function changes(next) {
  const out = [];
  const before = committed || { packages: [], modules: [] };
  const names = (b) => new Set([...(b.packages || []), ...(b.modules || [])].map((p) => p.name));
  const old = names(before);
  const now = names(next);
  for (const n of now) if (!old.has(n)) out.push(`add package ${n}`);
  for (const n of old) if (!now.has(n)) out.push(`remove package ${n}`);
  const strip = (b) => JSON.stringify({ ...b, packages: [], modules: [], version: "" });
  if (strip(before) !== strip(next) && committed) out.push("change settings");
  if (!committed) out.unshift(`create blueprint ${next.name}`);
  return out;
}

function confirmCommit() {
  const next = collect();
  const list = changes(next);
  $("commit-changes").replaceChildren(...(list.length ? list : ["no changes (the version is " +
    "still bumped)"]).map((t) => h("li", {}, t)));
  $("commit-version").textContent = committed ? `Version ${committed.version}: the server ` +
    "moves it to the next patch level when the version is unchanged." : `Version ${next.version}`;
  const dialog = $("commit-dialog");
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "commit") guarded($("commit"), () => commit(next));
  };
  dialog.showModal();
}

async function commit(next) {
  clearError();
  const before = committed ? committed.version : null;
  await call("POST", "blueprints/new", next);
  await openEditor(next.name);
  const after = committed.version;
  notice(before ? `Committed ${next.name}: version ${before} → ${after}`
    : `Committed ${next.name}, version ${after}`);
  onChange();
}
