// Composes: the "Create image" dialog (POST /compose with ostree ref/parent/url), the live
// list (compose/status/* polled: every second while something is queued or building, its
// "progress" field drawn as a progress bar), the log view (compose/log, live while running),
// stop, delete and download of the image (compose/image).

import { call, download, get, text } from "./api.js";
import { $, clearError, guarded, h, humanSize, notice, showError } from "./dom.js";

const ACTIVE = new Set(["WAITING", "RUNNING"]);
const LABEL = { WAITING: "Pending", RUNNING: "Building", FINISHED: "Ready", FAILED: "Failed" };
const rows = new Map();   // compose id -> {row, cells, buttons}
let logId = null;
let logFinal = null;     // the log shown is complete (its compose has ended)
let timer = null;
let types = null;

const short = (id) => id.slice(0, 8);

export function initComposes() {
  $("image-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded($("image-create"), createImage);
  });
  $("image-cancel").addEventListener("click", () => $("image-dialog").close());
  $("log-close").addEventListener("click", () => {
    logId = null;
    $("log-view").hidden = true;
  });
}

// ---- create image ---------------------------------------------------------------------

export async function openCreateImage(blueprintNames, selectedName) {
  if (!types) types = (await get("compose/types")).types.filter((t) => t.enabled);
  $("image-blueprint").replaceChildren(...blueprintNames.map((n) =>
    h("option", { value: n, selected: n === selectedName }, n)));
  $("image-type").replaceChildren(...types.map((t) =>
    h("option", { value: t.name }, typeLabel(t.name))));
  for (const id of ["image-ref", "image-parent", "image-url"]) $(id).value = "";
  clearError($("image-error"));
  $("image-dialog").showModal();
}

function typeLabel(name) {
  const known = { "edge-commit": "Edge Commit (.tar)", "edge-container": "Edge Container (.tar)" };
  return known[name] ? `${known[name]} — ${name}` : name;
}

async function createImage() {
  clearError($("image-error"));
  const request = { blueprint_name: $("image-blueprint").value,
    compose_type: $("image-type").value, branch: "master" };
  const ostree = {};
  for (const [key, id] of [["ref", "image-ref"], ["parent", "image-parent"], ["url", "image-url"]]) {
    const value = $(id).value.trim();
    if (value) ostree[key] = value;
  }
  if (Object.keys(ostree).length) request.ostree = ostree;
  let reply;
  try {
    reply = await call("POST", "compose", request);
  } catch (err) {
    showError(err, $("image-error"));
    return;
  }
  $("image-dialog").close();
  notice(`Compose ${reply.build_id} queued: ${request.blueprint_name}, ${request.compose_type}`);
  await refresh();
}

// ---- the list -------------------------------------------------------------------------

export async function refresh() {
  clearTimeout(timer);
  let entries = [];
  try {
    entries = (await get("compose/status/*")).uuids || [];
    if (logId) await refreshLog(entries.find((e) => e.id === logId));
  } catch (err) {
    showError(err);
    timer = setTimeout(refresh, 5000);
    return;
  }
  render(entries);
  const busy = entries.some((e) => ACTIVE.has(e.queue_status));
  timer = setTimeout(refresh, busy ? 1000 : 4000);
}

function render(entries) {
  entries.sort((a, b) => b.job_created - a.job_created);
  const seen = new Set();
  const body = $("compose-rows");
  entries.forEach((entry, index) => {
    seen.add(entry.id);
    let item = rows.get(entry.id);
    if (!item) {
      item = makeRow(entry);
      rows.set(entry.id, item);
    }
    update(item, entry);
    if (body.children[index] !== item.row) body.insertBefore(item.row, body.children[index] || null);
  });
  for (const [id, item] of rows) {
    if (!seen.has(id)) {
      item.row.remove();
      rows.delete(id);
    }
  }
  $("composes-empty").hidden = entries.length > 0;
}

function makeRow(entry) {
  const id = entry.id;
  const s = short(id);
  const cells = { status: h("td"), progress: h("td") };
  const buttons = {
    log: h("button", { type: "button", "aria-label": `Show log of compose ${s}`,
      onclick: () => openLog(id) }, "Logs"),
    download: h("button", { type: "button", class: "primary",
      "aria-label": `Download image of compose ${s}`,
      onclick: (ev) => guarded(ev.currentTarget, () => downloadImage(id)) }, "Download"),
    stop: h("button", { type: "button", "aria-label": `Stop compose ${s}`,
      onclick: (ev) => guarded(ev.currentTarget, () => stop(id)) }, "Stop build"),
    remove: h("button", { type: "button", "aria-label": `Delete compose ${s}`,
      onclick: (ev) => guarded(ev.currentTarget, () => remove(id)) }, "Delete"),
  };
  const created = new Date(entry.job_created * 1000);
  const row = h("tr", { "data-compose-id": id },
    h("th", { scope: "row" }, h("code", { title: id }, s)),
    h("td", {}, entry.blueprint), h("td", {}, entry.version),
    h("td", {}, entry.compose_type),
    h("td", {}, h("time", { datetime: created.toISOString() }, created.toLocaleString())),
    cells.status, cells.progress, h("td", { class: "actions" }, Object.values(buttons)));
  return { row, cells, buttons, key: "" };
}

function update(item, entry) {
  const st = entry.queue_status;
  const p = entry.progress || null;
  const key = JSON.stringify([st, p, entry.image_size, entry.error]);
  if (key === item.key) return;
  item.key = key;
  const s = short(entry.id);
  item.cells.status.replaceChildren(h("span", { class: `badge s-${st}`, title: LABEL[st] || st,
    "aria-label": `Status of compose ${s}: ${st}`, "data-status": st }, st));
  const progress = [];
  if (st === "RUNNING") {
    const total = p && p.total ? p.total : 0;
    const done = p ? Math.min(p.done, total) : 0;
    progress.push(h("progress", { max: total || 1, value: total ? done : null,
      "aria-label": `Progress of compose ${s}` }),
    h("span", { class: "step" }, ` ${total ? Math.round((100 * done) / total) : 0}% ` +
      `${p && p.message ? p.message : ""}`));
  } else if (st === "WAITING") {
    progress.push("queued");
  } else if (st === "FINISHED") {
    progress.push(humanSize(entry.image_size) || "done");
  } else if (entry.error) {
    progress.push(h("span", { class: "err" }, entry.error));
  }
  item.cells.progress.replaceChildren(...progress);
  item.buttons.log.hidden = st === "WAITING";
  item.buttons.download.hidden = st !== "FINISHED";
  item.buttons.stop.hidden = !ACTIVE.has(st);
  item.buttons.remove.hidden = ACTIVE.has(st);
}

// ---- actions --------------------------------------------------------------------------

async function downloadImage(id) {
  notice(`Downloading the image of compose ${short(id)}…`);
  const result = await download(`compose/image/${id}`, (done, total) => {
    notice(`Downloading the image of compose ${short(id)}: ${humanSize(done)}` +
      (total ? ` of ${humanSize(total)}` : ""));
  });
  notice(`Downloaded ${result.filename} (${humanSize(result.size)})`);
}

async function stop(id) {
  await call("DELETE", `compose/cancel/${id}`);
  notice(`Compose ${short(id)} stopped`);
  await refresh();
}

async function remove(id) {
  const reply = await call("DELETE", `compose/delete/${id}`);
  if (reply.errors && reply.errors.length) {
    showError({ message: reply.errors.map((e) => `${e.id}: ${e.msg}`).join("; ") });
  } else {
    notice(`Compose ${short(id)} deleted`);
  }
  if (logId === id) $("log-close").click();
  await refresh();
}

async function openLog(id) {
  logId = id;
  logFinal = null;
  $("log-heading").textContent = `Log of compose ${short(id)}`;
  $("log-text").textContent = "";
  $("log-view").hidden = false;
  await refreshLog({ id, queue_status: "RUNNING" });
  $("log-view").scrollIntoView({ block: "nearest" });
}

async function refreshLog(entry) {
  if (!entry || entry.queue_status === "WAITING" || logFinal === entry.id) return;
  if (!ACTIVE.has(entry.queue_status)) logFinal = entry.id;
  const pre = $("log-text");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const log = await text(`compose/log/${entry.id}?size=256`);
  if (logId !== entry.id || log === pre.textContent) return;
  pre.textContent = log;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}
