// The shop's only way to the public API: fetch on this origin, the session token in sessionStorage
// (sent as a Bearer header, never put in a URL or logged), every call recorded for "Under the hood"
// with the headers that tell what it cost, and API errors turned into readable messages.

const SESSION_KEY = "scaleshop.session";
const calls = [];
let view = 0;  // counts pages shown: a call or a poll of a page already left records nothing
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function session() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved && Date.parse(saved.expires_at) > Date.now()) return saved;
  } catch { /* a damaged entry counts as signed out */ }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

export function saveSession(value) {
  if (value) sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(SESSION_KEY);
}

// ---- the calls of the current page ---------------------------------------------------------

export function onCall(listener) { listeners.add(listener); }
export function callsOfThisPage() { return calls; }
export function newPage() { view += 1; calls.length = 0; listeners.forEach((listener) => listener(calls)); }

function record(entry, ofView) {
  if (ofView !== view) return;
  calls.push(entry);
  listeners.forEach((listener) => listener(calls));
}

// ---- readable errors -----------------------------------------------------------------------

const STATUS_SENTENCES = {
  401: "Please sign in again: your session has ended or the email and password do not match.",
  403: "That is not yours to change.",
  404: "This could not be found; it may have been deleted.",
  413: "That is too large for the shop to accept.",
  429: "Too many requests from you just now; wait a moment and try again.",
  503: "Part of the shop is unavailable right now; try again in a moment.",
};

function readableError(status, body) {
  const error = body && typeof body === "object" && body.error;
  if (!error) return new ApiError(status, "http_" + status, STATUS_SENTENCES[status] || `The server answered ${status}.`);
  const details = Array.isArray(error.details) ? error.details : [];
  let message = String(error.message || STATUS_SENTENCES[status] || `The server answered ${status}.`);
  return new ApiError(status, String(error.code || ""), message, details);
}

export function describe(error) {
  if (!(error instanceof ApiError)) return "The shop could not reach the server; check your connection and try again.";
  const fields = error.details
    .filter((d) => d && typeof d === "object" && d.message)
    .map((d) => (d.field ? `${d.field}: ${d.message}` : String(d.message)));
  return fields.length ? `${error.message} (${fields.join("; ")})` : error.message;
}

// ---- the call ------------------------------------------------------------------------------

export async function api(method, path, { body, raw, auth = false } = {}) {
  const headers = { Accept: "application/json" };
  const current = session();
  if (auth && current) headers.Authorization = `Bearer ${current.token}`;
  let payload;
  if (raw !== undefined) { payload = raw; headers["Content-Type"] = "application/json"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const started = performance.now();
  const ofView = view;
  const entry = { method, path, status: "…", servedBy: "", cache: "", roundTrips: "", ms: null };
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (failure) {
    entry.status = "network error";
    entry.ms = performance.now() - started;
    record(entry, ofView);
    throw failure;
  }
  const text = await response.text();
  entry.ms = performance.now() - started;
  entry.status = response.status;
  entry.servedBy = response.headers.get("X-Served-By") || "";
  entry.cache = response.headers.get("X-Cache") || "";
  entry.roundTrips = response.headers.get("X-DB-Round-Trips") || "";
  record(entry, ofView);
  let parsed = null;
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = null; }
  }
  if (!response.ok) {
    if (response.status === 401 && current) saveSession(null);
    throw readableError(response.status, parsed);
  }
  return parsed;
}

// Polls a job until it ends, calling progress(job) after each read; null once the page is left.
export async function waitForJob(jobId, progress, intervalMs = 300) {
  const ofView = view;
  for (;;) {
    if (ofView !== view) return null;
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`, { auth: true });
    progress(job);
    if (job.status === "succeeded" || job.status === "failed") return job;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
