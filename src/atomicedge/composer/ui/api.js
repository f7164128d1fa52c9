// The weldr API (v1) as the page uses it: fetch with the bearer token, osbuild-composer's
// error bodies ({"status": false, "errors": [{"id", "msg"}]}) turned into ApiError, and one
// readable sentence per error id.

const TOKEN_KEY = "atomicedge-composer-token";
const BASE = "/api/v1/";

let token = null;

// The token comes in the URL fragment (#token=...), which browsers never send to a server.
// It is kept for this tab only and removed from the address bar (history, screenshots).
export function initToken() {
  const match = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem(TOKEN_KEY);
  return token;
}

export class NetworkError extends Error {}

export class ApiError extends Error {
  constructor(status, errors) {
    super(errors.map((e) => `${e.id}: ${e.msg}`).join("; ") || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

const MEANING = {
  Unauthorized: "The API token is missing or wrong: open this page as /ui/#token=TOKEN " +
    "(the contents of the server's --token-file)",
  HTTPError: "The request was refused",
  UnknownBlueprint: "No such blueprint",
  BlueprintsError: "The blueprint was refused",
  InvalidChars: "A name holds characters that are not allowed (use letters, digits, '.', '_', '-')",
  DepsolveError: "The blueprint's packages cannot be installed together",
  ComposeError: "That image type cannot be built here",
  ManifestCreationFailed: "The OSTree settings are invalid",
  OSTreeOptionsError: "The OSTree repository could not be used",
  BuildInWrongState: "The compose is not in the right state for that",
  UnknownUUID: "No such compose",
  UnknownProject: "No package matches",
  UnknownModule: "No package matches",
  ProjectsError: "The package search failed",
  ModulesError: "The package search failed",
  DistroError: "Unknown distribution",
  MissingPost: "The request body is missing",
  InternalError: "The server failed (its log has the details)",
  InternalServerError: "The server could not read the image",
  NetworkError: "The composer service cannot be reached",
};

// One line per error: what it means, the server's own words, and the error id.
export function describe(err) {
  if (err instanceof NetworkError) return `${MEANING.NetworkError}: ${err.message}`;
  if (!(err instanceof ApiError)) return err && err.message ? err.message : String(err);
  if (err.status === 401) {
    return `${MEANING.Unauthorized} [HTTPError 401]`;
  }
  if (!err.errors.length) {
    return `The server answered HTTP ${err.status}`;
  }
  return err.errors.map((e) => {
    const meaning = MEANING[e.id] || "The request failed";
    const msg = (e.msg || "").trim();
    return msg ? `${meaning}: ${msg} [${e.id}]` : `${meaning} [${e.id}]`;
  }).join(" — ");
}

function headers(extra) {
  const out = Object.assign({}, extra);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

async function send(method, path, body, contentType) {
  const init = { method, headers: headers(contentType ? { "Content-Type": contentType } : {}) };
  if (body !== undefined) init.body = body;
  let resp;
  try {
    resp = await fetch(path.startsWith("/") ? path : BASE + path, init);
  } catch (exc) {
    throw new NetworkError(exc.message || String(exc));
  }
  return resp;
}

async function failure(resp) {
  let errors = [];
  try {
    const data = await resp.json();
    errors = Array.isArray(data.errors) ? data.errors : [];
  } catch (_) { /* not JSON: the status line says it */ }
  return new ApiError(resp.status, errors);
}

// JSON request -> JSON reply; an ApiError for HTTP errors and for {"status": false}.
export async function call(method, path, json) {
  const body = json === undefined ? undefined : JSON.stringify(json);
  const resp = await send(method, path, body, json === undefined ? null : "application/json");
  if (!resp.ok) throw await failure(resp);
  const data = await resp.json();
  if (data && data.status === false) throw new ApiError(resp.status, data.errors || []);
  return data;
}

export const get = (path) => call("GET", path);

// Plain-text replies (compose/log); an error body (JSON) becomes an ApiError.
export async function text(path) {
  const resp = await send("GET", path);
  const type = resp.headers.get("Content-Type") || "";
  if (!resp.ok || type.startsWith("application/json")) {
    const err = await failure(resp);
    if (resp.ok && !err.errors.length) return "";
    throw err;
  }
  return resp.text();
}

// Downloads need the Authorization header, which a plain link cannot send: the body is
// streamed into a Blob (progress reported as bytes arrive) and saved through an object URL.
export async function download(path, onProgress) {
  const resp = await send("GET", path);
  if (!resp.ok) throw await failure(resp);
  const total = Number(resp.headers.get("Content-Length") || 0);
  const disposition = resp.headers.get("Content-Disposition") || "";
  const match = disposition.match(/filename="?([^";]+)"?/);
  const filename = match ? match[1] : "download.tar";
  const reader = resp.body.getReader();
  const chunks = [];
  let done = 0;
  for (;;) {
    const part = await reader.read();
    if (part.done) break;
    chunks.push(part.value);
    done += part.value.length;
    onProgress(done, total);
  }
  const url = URL.createObjectURL(new Blob(chunks, { type: "application/x-tar" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return { filename, size: done };
}
