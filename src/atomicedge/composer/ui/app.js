// Image Builder for the atomicedge composer: the blueprint list and the wiring of the views.
// Plain ES modules, no build step; everything goes through the weldr API (v1).

import { call, get, initToken } from "./api.js";
import { initComposes, openCreateImage, refresh as refreshComposes } from "./composes.js";
import { $, clearError, guarded, h, notice, showError } from "./dom.js";
import { editing, initEditor, newBlueprint, openEditor } from "./editor.js";

let names = [];

async function loadBlueprints() {
  const list = await get("blueprints/list?limit=1000");
  names = list.blueprints || [];
  let infos = [];
  if (names.length) {
    infos = (await get(`blueprints/info/${names.map(encodeURIComponent).join(",")}`)).blueprints;
  }
  const byName = new Map(infos.map((b) => [b.name, b]));
  $("blueprint-rows").replaceChildren(...names.map((name) => {
    const bp = byName.get(name) || { name };
    return h("tr", { "data-blueprint": name },
      h("th", { scope: "row" }, name),
      h("td", { "aria-label": `Version of ${name}` }, bp.version || ""),
      h("td", {}, bp.description || ""),
      h("td", { class: "actions" },
        h("button", { type: "button", "aria-label": `Edit blueprint ${name}`,
          onclick: (ev) => guarded(ev.currentTarget, () => openEditor(name)) }, "Edit packages"),
        h("button", { type: "button", "aria-label": `Create image from ${name}`,
          onclick: (ev) => guarded(ev.currentTarget, () => openCreateImage(names, name)) },
        "Create image"),
        h("button", { type: "button", "aria-label": `Delete blueprint ${name}`,
          onclick: (ev) => guarded(ev.currentTarget, () => deleteBlueprint(name)) }, "Delete")));
  }));
  $("blueprints-empty").hidden = names.length > 0;
}

async function deleteBlueprint(name) {
  if (!window.confirm(`Delete blueprint ${name} and its history?`)) return;
  await call("DELETE", `blueprints/delete/${encodeURIComponent(name)}`);
  notice(`Deleted blueprint ${name}`);
  await loadBlueprints();
}

async function serverStatus() {
  const st = await get("/api/status");
  $("server").textContent = `weldr API v${st.api} · ${st.build}`;
}

function wire() {
  $("alert-close").addEventListener("click", () => clearError());
  $("new-blueprint").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("new-blueprint-name").value.trim();
    if (names.includes(name)) {
      guarded(ev.submitter, () => openEditor(name));
    } else {
      newBlueprint(name);
    }
    $("new-blueprint-name").value = "";
  });
  $("editor-create-image").addEventListener("click", (ev) => {
    const name = editing();
    if (!names.includes(name)) {
      showError(new Error(`Commit blueprint ${name} before creating an image from it`));
      return;
    }
    guarded(ev.currentTarget, () => openCreateImage(names, name));
  });
  initEditor(() => guarded(null, loadBlueprints));
  initComposes();
}

async function main() {
  initToken();
  wire();
  try {
    await serverStatus();
  } catch (err) {
    $("server").textContent = "not connected";
    showError(err);
    return;
  }
  await guarded(null, loadBlueprints);
  await refreshComposes();
  document.body.dataset.ready = "true";
}

main();
