// shellid web page: identify a specimen, add a species, browse the collection.
// Plain JavaScript against the HTTP API (/v1/...); no build step, no external resources.
"use strict";

const MAX_QUERY_PHOTOS_DEFAULT = 5;
const state = { info: null, photos: [] };

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message || "";
}

function displayName(name) {
  return (name || "").replace(/_/g, " ");
}

// Number format of the server's wording (api/wording.py percent): never claims certainty.
function percent(p) {
  if (p > 0.99) return "> 99 %";
  if (p > 0 && p < 0.01) return "< 1 %";
  return `${Math.round(100 * p)} %`;
}

// Family, and the genus when it is not simply the first word of the species name.
function taxonText(c) {
  const genus = c.genus && !c.species.startsWith(`${c.genus}_`) ? displayName(c.genus) : "";
  return [c.family, genus].filter(Boolean).join(", ");
}

function readKey() {
  return $("read-key").value.trim() || $("api-key").value.trim();
}

function authHeaders(write) {
  const key = write ? $("api-key").value.trim() : readKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch + JSON, turning every error answer into one readable sentence.
async function api(path, options = {}, write = false) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { ...(options.headers || {}), ...authHeaders(write) },
    });
  } catch (err) {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `the server answered ${response.status}`;
    if (response.status === 401) {
      revealKeyFields(write);
    }
    throw new Error(detail); // verbatim: it may start with a file name
  }
  return body;
}

function revealKeyFields(write) {
  if (write) {
    $("api-key-field").hidden = false;
  } else {
    $("read-key-bar").hidden = false;
  }
}

// Images served by the API: plain <img src> unless a key must be sent with the request.
async function setImage(img, url) {
  if (!url) return;
  const headers = authHeaders(false);
  if (!headers.Authorization) {
    img.src = url;
    return;
  }
  try {
    const response = await fetch(url, { headers });
    if (response.ok) img.src = URL.createObjectURL(await response.blob());
  } catch (err) {
    /* a missing thumbnail is not worth an error message */
  }
}

// ------------------------------------------------------------------ views
function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.id !== `view-${name}`;
  }
  showError("");
  if (name === "species") loadSpecies();
}

// --------------------------------------------------------------- identify
function maxQueryPhotos() {
  return state.info ? state.info.limits.max_query_files : MAX_QUERY_PHOTOS_DEFAULT;
}

function choosePhotos(fileList) {
  const files = Array.from(fileList || []).filter((f) => !f.type || f.type.startsWith("image/"));
  const limit = maxQueryPhotos();
  showError("");
  if (files.length > limit) {
    showError(`Choose at most ${limit} photos of one specimen (you chose ${files.length}).`);
    files.length = limit;
  }
  state.photos = files;
  const list = $("identify-previews");
  list.replaceChildren();
  files.forEach((file, i) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = `Chosen photo ${i + 1}: ${file.name}`;
    item.append(img);
    list.append(item);
  });
  $("identify-submit").disabled = files.length === 0;
  $("result").hidden = true;
}

// A candidate row: the name (and family / genus), then either a probability with its bar or,
// when the answer is a rejection (probability null), its similarity on a neutral scale.
function candidateRow(label, taxon, probability, score) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = label;
  if (taxon) {
    const span = document.createElement("span");
    span.className = "taxon";
    span.textContent = ` — ${taxon}`;
    name.append(span);
  }
  const value = document.createElement("span");
  const bar = document.createElement("div");
  const fill = document.createElement("span");
  bar.append(fill);
  if (probability !== null && probability !== undefined) {
    item.className = "probability";
    value.className = "pct";
    value.textContent = percent(probability);
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(Math.round(100 * probability)));
    bar.setAttribute("aria-label", `Probability for ${label}`);
    fill.style.width = `${Math.max(0, Math.min(100, 100 * probability)).toFixed(1)}%`;
  } else {
    item.className = "similarity";
    value.className = "sim";
    value.textContent = `similarity ${score.toFixed(2)}`;
    bar.className = "simbar";
    bar.setAttribute("aria-hidden", "true");
    fill.style.width = `${Math.max(0, Math.min(100, 100 * score)).toFixed(1)}%`;
  }
  item.append(name, value, bar);
  return item;
}

// Every word about the answer comes from the server (summary, detail, headings); the page only
// formats numbers.
function renderResult(result) {
  const summary = $("result-summary");
  summary.textContent = result.summary;
  summary.className = `summary ${result.decision}`;
  const detail = $("result-detail");
  detail.textContent = result.detail || "";
  detail.hidden = !result.detail;
  $("result-candidates-title").textContent = result.candidates_heading || "";
  $("result-similar-title").textContent = result.similar_heading || "";

  const list = $("result-candidates");
  list.replaceChildren();
  list.className = `candidates ${result.decision}`;
  for (const c of result.candidates) {
    list.append(candidateRow(displayName(c.species), taxonText(c), c.probability, c.score));
  }
  const none = result.none_probability;
  if (none !== null && none !== undefined && result.candidates.some((c) => c.probability != null)) {
    const row = candidateRow("None of these", "", none, 0);
    row.classList.add("none");
    list.append(row);
  }

  const gallery = $("result-similar");
  gallery.replaceChildren();
  for (const s of result.similar) {
    const item = document.createElement("li");
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = `Reference photo of ${displayName(s.species)}`;
    img.loading = "lazy";
    setImage(img, s.image_url);
    const caption = document.createElement("figcaption");
    caption.textContent = displayName(s.species);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = ` · similarity ${s.score.toFixed(2)}`;
    caption.append(score);
    figure.append(img, caption);
    item.append(figure);
    gallery.append(item);
  }
  $("result").hidden = false;
}

async function identify(event) {
  event.preventDefault();
  if (!state.photos.length) {
    showError("Choose at least one photo first.");
    return;
  }
  const form = new FormData();
  for (const file of state.photos) form.append("images", file, file.name);
  const params = new URLSearchParams();
  for (const key of ["region", "genus", "family"]) {
    const value = $(`filter-${key}`).value.trim();
    if (value) params.set(key, value);
  }
  const button = $("identify-submit");
  button.disabled = true;
  showError("");
  setStatus("Identifying…");
  try {
    const query = params.toString() ? `?${params}` : "";
    const result = await api(`/v1/identify${query}`, { method: "POST", body: form });
    renderResult(result);
    setStatus("");
  } catch (err) {
    $("result").hidden = true;
    setStatus("");
    showError(err.message);
  } finally {
    button.disabled = state.photos.length === 0;
  }
}

// -------------------------------------------------------------- try these
// Specimens the demo kept out of the collection (GET /v1/try-these): a strip of photos under
// the form; choosing one loads its photos as if picked by hand and identifies them.
async function loadTryThese() {
  let body = null;
  try {
    body = await api("/v1/try-these");
  } catch (err) {
    return; // the strip is optional: say nothing
  }
  const list = $("try-list");
  list.replaceChildren();
  for (const item of (body && body.items) || []) {
    if (!item.photos.length) continue;
    const entry = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "try-item";
    button.title = `Identify this ${displayName(item.species)} (${item.photos.length} photos)`;
    const img = document.createElement("img");
    img.alt = "";
    img.addEventListener("error", () => entry.remove());
    setImage(img, item.photos[0].url);
    const caption = document.createElement("span");
    caption.textContent = displayName(item.species);
    button.append(img, caption);
    button.addEventListener("click", () => tryItem(item));
    entry.append(button);
    list.append(entry);
  }
  $("try-these").hidden = list.children.length === 0;
}

async function tryItem(item) {
  showError("");
  setStatus("Loading the photos…");
  try {
    const files = [];
    for (const photo of item.photos.slice(0, maxQueryPhotos())) {
      const response = await fetch(photo.url, { headers: authHeaders(false) });
      if (!response.ok) throw new Error(`${photo.name} could not be loaded (${response.status}).`);
      const blob = await response.blob();
      files.push(new File([blob], photo.name, { type: blob.type || "image/jpeg" }));
    }
    setStatus("");
    choosePhotos(files);
    $("identify-form").requestSubmit();
  } catch (err) {
    setStatus("");
    showError(err.message);
  }
}

// ----------------------------------------------------------------- enroll
async function enroll(event) {
  event.preventDefault();
  const name = $("enroll-name").value.trim();
  const files = Array.from($("enroll-photos").files || []);
  showError("");
  $("enroll-result").hidden = true;
  if (!name) {
    showError("Enter the species name.");
    $("enroll-name").focus();
    return;
  }
  if (!files.length) {
    showError("Choose at least one photo of the species.");
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  for (const key of ["genus", "family", "region"]) {
    const value = $(`enroll-${key}`).value.trim();
    if (value) form.append(key, value);
  }
  const button = $("enroll-submit");
  button.disabled = true;
  setStatus("Adding photos…");
  try {
    const path = `/v1/species/${encodeURIComponent(name)}/images`;
    const report = await api(path, { method: "POST", body: form }, true);
    const parts = [`Added ${report.added} photo${report.added === 1 ? "" : "s"} of ${displayName(report.species)}`];
    if (report.duplicates.length) parts.push(`${report.duplicates.length} already there`);
    const unusable = Object.keys(report.errors || {}).length;
    if (unusable) parts.push(`${unusable} could not be used`);
    const message = `${parts.join("; ")}. The collection now has ${report.total} photo${report.total === 1 ? "" : "s"} of it.`;
    const done = $("enroll-result");
    done.textContent = message;
    done.hidden = false;
    $("enroll-photos").value = "";
    loadInfo();
  } catch (err) {
    showError(err.message);
  } finally {
    setStatus("");
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- species
async function loadSpecies() {
  const list = $("species-list");
  setStatus("Loading the collection…");
  try {
    const data = await api("/v1/species");
    list.replaceChildren();
    $("species-total").textContent =
      `${data.total_species} species, ${data.total_specimens} photos.` +
      (data.total_species ? "" : " Add a species to start.");
    for (const s of data.species) {
      const item = document.createElement("li");
      let thumb;
      if (s.thumbnail_url) {
        thumb = document.createElement("img");
        thumb.alt = `Photo of ${displayName(s.species)}`;
        thumb.loading = "lazy";
        setImage(thumb, s.thumbnail_url);
      } else {
        thumb = document.createElement("span");
        thumb.className = "noimg";
      }
      const text = document.createElement("div");
      const name = document.createElement("div");
      name.className = "name";
      name.textContent = displayName(s.species);
      const meta = document.createElement("div");
      meta.className = "meta";
      const taxon = [s.family, s.region].filter(Boolean).join(" · ");
      meta.textContent = `${s.count} photo${s.count === 1 ? "" : "s"}${taxon ? ` · ${taxon}` : ""}`;
      text.append(name, meta);
      item.append(thumb, text);
      list.append(item);
    }
    setStatus("");
  } catch (err) {
    setStatus("");
    showError(err.message);
  }
}

async function loadInfo() {
  try {
    const response = await fetch("/v1/info");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      setStatus(body.detail ? `Not ready: ${body.detail}` : "The server is starting…");
      if (response.status === 503) setTimeout(loadInfo, 2000);
      return;
    }
    state.info = await response.json();
    $("api-key-field").hidden = !state.info.writes_need_key;
    $("read-key-bar").hidden = !state.info.reads_need_key;
    setStatus("");
    loadTryThese();
  } catch (err) {
    setStatus("The server cannot be reached.");
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("identify-photos").addEventListener("change", (e) => choosePhotos(e.target.files));
  $("identify-form").addEventListener("submit", identify);
  $("enroll-form").addEventListener("submit", enroll);

  const zone = $("dropzone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    choosePhotos(e.dataTransfer.files);
  });
  // Dropping a photo anywhere else must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  loadInfo();
}

document.addEventListener("DOMContentLoaded", wire);
