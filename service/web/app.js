// fine-zoo's page: every call goes through api(), which sends the stored key as Bearer; the job form
// is built from the API's own OpenAPI schema of JobSpec, and the API alone validates it.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "fine-zoo-api-key";
let watching = null; // {id, abort}
let ckptCursor = null;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = localStorage.getItem(KEY);
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || ("HTTP " + status));
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(path, opts);
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (e) { body = { detail: r.statusText }; }
    throw new ApiError(r.status, body);
  }
  return r;
}
const getJson = async (path) => (await api(path)).json();

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  row.appendChild(td);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

// Learngenes
async function loadLearngenes() {
  const body = $("learngene-table").tBodies[0];
  body.textContent = "";
  for (const lg of await getJson("/v1/learngenes")) {
    const tr = body.insertRow();
    tr.dataset.id = lg.id;
    const widths = lg.widths.length ? lg.widths.join(", ") : String(lg.hidden_size);
    for (const v of [lg.id, lg.source_dataset, lg.depth, lg.hidden_size, widths, lg.rank, lg.steps,
      fmtBytes(lg.bytes), lg.descendants_count]) cell(tr, v);
    tr.onclick = () => showLearngene(lg.id);
  }
}

async function showLearngene(id) {
  const lg = await getJson("/v1/learngenes/" + encodeURIComponent(id));
  const box = $("learngene-detail");
  box.hidden = false;
  box.textContent = "";
  const h = document.createElement("h3");
  h.textContent = lg.id + ": " + lg.descendants.length + " descendants (sha256 " + lg.sha256.slice(0, 12) + "…)";
  box.appendChild(h);
  const ul = document.createElement("ul");
  for (const d of lg.descendants) {
    const li = document.createElement("li");
    li.textContent = d.checkpoint_id + " depth " + d.depth + " width " + d.hidden_size + " " + d.dataset + " " + d.method;
    li.onclick = () => showCheckpoint(d.checkpoint_id);
    ul.appendChild(li);
  }
  box.appendChild(ul);
  const pictures = document.createElement("div");
  pictures.className = "pictures";
  box.appendChild(pictures);
  const width = (p) => (p.name === "curve.png" ? -1 : Number(p.name.replace(/\D/g, "")));
  for (const p of [...lg.pictures].sort((a, b) => width(a) - width(b))) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = p.name;
    img.className = "learngene-picture";
    img.src = await blobUrl(p.url);
    const cap = document.createElement("figcaption");
    cap.textContent = p.name === "curve.png" ? "pre-training loss" : "samples at width " + p.name.replace(/\D/g, "");
    fig.append(img, cap);
    pictures.appendChild(fig);
  }
}

// The job form, from the OpenAPI schema of JobSpec
async function buildForm() {
  const doc = await (await fetch("/openapi.json")).json();
  const spec = doc.components.schemas.JobSpec;
  const [datasets, learngenes] = await Promise.all([getJson("/v1/datasets"), getJson("/v1/learngenes")]);
  const lg = learngenes[0];
  const box = $("job-fields");
  box.textContent = "";
  for (const [name, p] of Object.entries(spec.properties)) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    wrap.id = "field-" + name;
    const label = document.createElement("label");
    label.textContent = name + ((spec.required || []).includes(name) ? " *" : "");
    label.htmlFor = "in-" + name;
    wrap.appendChild(label);
    const type = p.type || (p.anyOf ? p.anyOf[0].type : "string");
    let input;
    if (p.enum || name === "dataset" || name === "learngene") {
      input = document.createElement("select");
      const options = p.enum || (name === "dataset" ? datasets.map((d) => d.id) : ["", ...learngenes.map((l) => l.id)]);
      for (const o of options) {
        const opt = document.createElement("option");
        opt.value = o;
        opt.textContent = o || "(the default alias)";
        input.appendChild(opt);
      }
      if (p.default !== undefined) input.value = p.default;
      if (name === "dataset" && lg && options.includes(lg.source_dataset)) input.value = lg.source_dataset;
    } else if (type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = p.default !== false;
    } else {
      input = document.createElement("input");
      input.type = type === "integer" ? "number" : "text";
      if (p.default !== undefined && p.default !== null) input.value = p.default;
      if (name === "hidden_size" && lg) input.value = lg.hidden_size;
      if (name === "depth" && lg) input.value = lg.depth;
    }
    input.id = "in-" + name;
    input.name = name;
    input.dataset.kind = type;
    wrap.appendChild(input);
    const hint = document.createElement("div");
    hint.className = "hint";
    hint.textContent = p.description || "";
    wrap.appendChild(hint);
    const err = document.createElement("div");
    err.className = "error";
    err.id = "error-" + name;
    wrap.appendChild(err);
    box.appendChild(wrap);
  }
}

function formSpec() {
  const spec = {};
  for (const input of $("job-fields").querySelectorAll("input, select")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") { spec[input.name] = input.checked; continue; }
    if (input.value === "") continue;
    if (kind === "array") { spec[input.name] = input.value.split(",").map((v) => v.trim()).filter(Boolean); continue; }
    spec[input.name] = kind === "integer" && /^-?\d+$/.test(input.value) ? Number(input.value) : input.value;
  }
  return spec;
}

function clearErrors() {
  $("job-form-error").textContent = "";
  for (const el of document.querySelectorAll(".field")) el.classList.remove("invalid");
  for (const el of document.querySelectorAll(".field .error")) el.textContent = "";
}

function showProblem(e) {
  const items = (e.body && e.body.errors) || [];
  let placed = false;
  for (const item of items) {
    const field = $("field-" + item.field.split(".")[0]);
    if (!field) continue;
    field.classList.add("invalid");
    $("error-" + item.field.split(".")[0]).textContent = item.message;
    placed = true;
  }
  if (!placed) $("job-form-error").textContent = e.message;
}

async function submitJob(ev) {
  ev.preventDefault();
  clearErrors();
  try {
    const r = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(formSpec()) });
    watch((await r.json()).id);
    loadJobs();
  } catch (e) {
    if (e instanceof ApiError) showProblem(e); else $("job-form-error").textContent = String(e);
  }
}

// Watching a job: the SSE stream read with fetch (so the key goes as a header), resumed after a drop
function parseBlock(block) {
  const ev = { event: "message", id: null, data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "id") ev.id = Number(value);
    else if (field === "data") ev.data.push(value);
  }
  return ev.data.length ? { event: ev.event, id: ev.id, data: JSON.parse(ev.data.join("\n")) } : null;
}

async function follow(jobId, onEvent, signal) {
  let last = 0;
  for (let attempt = 0; attempt < 30 && !signal.aborted; attempt++) {
    try {
      const r = await api("/v1/jobs/" + jobId + "/events", { headers: { "Last-Event-ID": String(last) }, signal });
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const ev = parseBlock(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (!ev) continue;
          if (ev.id !== null) last = ev.id;
          onEvent(ev);
          if (ev.event === "end") return;
        }
      }
    } catch (e) {
      if (signal.aborted || (e instanceof ApiError && e.status < 500)) throw e;
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

function setStatus(status) {
  const el = $("watch-status");
  el.textContent = status;
  el.className = "status " + status;
}

function watch(jobId) {
  if (watching) watching.abort.abort();
  const abort = new AbortController();
  watching = { id: jobId, abort };
  $("watch").hidden = false;
  $("watch-id").textContent = jobId;
  $("watch-log").textContent = "";
  $("watch-error").textContent = "";
  $("watch-bar").value = 0;
  $("watch-progress").textContent = "";
  const log = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    $("watch-log").appendChild(li);
  };
  // Which learngene the job is built from, and why (a job that names none gets the best fit)
  const showChoice = (c) => {
    $("watch-learngene").textContent = c ? "learngene " + c.chosen + " (" + c.by + "): " + c.reason : "";
  };
  $("watch-learngene").textContent = "";
  getJson("/v1/jobs/" + jobId).then((j) => showChoice(j.spec.learngene_choice)).catch(() => {});
  follow(jobId, (ev) => {
    const d = ev.data;
    if (ev.event === "status") {
      setStatus(d.status);
      log("#" + ev.id + " " + d.status + (d.error ? ": " + d.error : ""));
      if (d.checkpoint_id) { loadCheckpoints(true); showCheckpoint(d.checkpoint_id); }  // downloadable already
    } else if (ev.event === "evaluation") {
      log("#" + ev.id + " metrics " + d.metrics_status + (d.error ? ": " + d.error : ""));
      if (d.metrics_status !== "running") { loadCheckpoints(true); showCheckpoint(d.checkpoint_id); }
    } else if (ev.event === "learngene") {
      showChoice({ chosen: d.learngene, by: d.by, reason: d.reason });
      log("#" + ev.id + " learngene " + d.learngene + " (" + d.by + ")");
    } else if (ev.event === "progress") {
      if (d.total) {
        $("watch-bar").max = d.total;
        $("watch-bar").value = d.step;
      }
      $("watch-progress").textContent = d.phase + (d.total ? " " + d.step + "/" + d.total : "") +
        (d.loss !== null && d.loss !== undefined ? " loss " + d.loss.toFixed(4) : "");
    } else if (ev.event === "end") {
      setStatus(d.status);
      if (d.error) $("watch-error").textContent = d.error;
      log("end: " + d.status);
      loadJobs();
      if (d.checkpoint_id) { loadLearngenes(); loadCheckpoints(true); showCheckpoint(d.checkpoint_id); }
    }
  }, abort.signal).catch((e) => { if (!abort.signal.aborted) $("watch-error").textContent = e.message; });
}

// Recent jobs: click one to watch it
async function loadJobs() {
  const body = $("job-table").tBodies[0];
  body.textContent = "";
  for (const j of (await getJson("/v1/jobs?limit=10")).items) {
    const tr = body.insertRow();
    tr.dataset.id = j.id;
    const p = j.progress;
    for (const v of [j.id, j.kind, j.status, j.dataset, j.method, j.spec.depth, j.spec.hidden_size,
      (p.phase || "") + (p.total ? " " + p.step + "/" + p.total : ""), j.created_at.slice(0, 19).replace("T", " ")]) cell(tr, v);
    tr.onclick = () => watch(j.id);
  }
}

// Checkpoints
async function loadCheckpoints(reset) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("ckpt-filter"))) if (v) params.set(k, v);
  if (!reset && ckptCursor) params.set("cursor", ckptCursor);
  const body = $("ckpt-table").tBodies[0];
  $("ckpt-error").textContent = "";
  try {
    const page = await getJson("/v1/checkpoints?" + params);
    if (reset) body.textContent = "";
    for (const c of page.items) {
      const tr = body.insertRow();
      tr.dataset.id = c.id;
      const loss = c.metrics.heldout_loss;
      for (const v of [c.id, c.dataset, c.method, c.depth, c.hidden_size,
        loss === undefined ? (c.metrics_status === "ready" ? "" : "metrics " + c.metrics_status) : loss.toFixed(4), c.created_at.slice(0, 19).replace("T", " ")]) cell(tr, v);
      tr.onclick = () => showCheckpoint(c.id);
    }
    ckptCursor = page.next_cursor;
    $("ckpt-more").hidden = !ckptCursor;
  } catch (e) {
    $("ckpt-error").textContent = e.message;
  }
}

async function blobUrl(path) {
  return URL.createObjectURL(await (await api(path)).blob());
}

async function download(path, filename) {
  const a = document.createElement("a");
  a.href = await blobUrl(path);
  a.download = filename;
  a.click();
}

let shownCheckpoint = 0;  // the latest showCheckpoint call: an older one that ends later changes nothing

async function showCheckpoint(id) {
  const mine = ++shownCheckpoint;
  const c = await getJson("/v1/checkpoints/" + encodeURIComponent(id));
  if (mine !== shownCheckpoint) return;
  $("ckpt-detail").hidden = false;
  $("ckpt-id").textContent = c.id;
  $("ckpt-metrics-status").textContent = "metrics " + c.metrics_status +
    (c.metrics_status === "pending" || c.metrics_status === "running" ? " (evaluating: the model files are ready)" : "") +
    (c.metrics_error ? ": " + c.metrics_error : "");
  $("ckpt-metrics-status").className = "status metrics-" + c.metrics_status;
  $("ckpt-metrics").textContent = JSON.stringify({ metrics: c.metrics, depth: c.depth, hidden_size: c.hidden_size,
    dataset: c.dataset, method: c.method, learngene: c.learngene }, null, 2);
  const formats = new Set(c.files.map((f) => f.format));
  for (const [img, name, fmt] of [["ckpt-curve", "curve.png", "curve"], ["ckpt-samples", "samples.png", "samples"]]) {
    const src = formats.has(fmt) ? await blobUrl("/v1/checkpoints/" + c.id + "/" + name) : "";
    if (mine !== shownCheckpoint) return;
    $(img).src = src;
  }
  const files = $("ckpt-files");
  files.textContent = "Download: ";
  for (const f of c.files) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = f.format + " (" + fmtBytes(f.bytes) + ")";
    b.title = "sha256 " + f.sha256;
    b.onclick = () => download(f.url, f.filename);
    files.appendChild(b);
  }
}

async function main() {
  $("api-key").value = localStorage.getItem(KEY) || "";
  $("key-form").onsubmit = (ev) => {
    ev.preventDefault();
    const v = $("api-key").value.trim();
    if (v) localStorage.setItem(KEY, v); else localStorage.removeItem(KEY);
    $("key-state").textContent = v ? "saved" : "cleared";
    start();
  };
  $("job-form").onsubmit = submitJob;
  $("ckpt-filter").onsubmit = (ev) => { ev.preventDefault(); loadCheckpoints(true); };
  $("ckpt-more").onclick = () => loadCheckpoints(false);
  $("jobs-refresh").onclick = () => loadJobs().catch((e) => { $("watch-error").textContent = e.message; });
  $("watch-cancel").onclick = () => watching && api("/v1/jobs/" + watching.id + "/cancel", { method: "POST" })
    .catch((e) => { $("watch-error").textContent = e.message; });
  await start();
}

async function start() {
  try {
    await Promise.all([loadLearngenes(), buildForm(), loadJobs(), loadCheckpoints(true)]);
  } catch (e) {
    $("job-form-error").textContent = e.message;
  }
}

main();
