// shellid web page: identify a specimen, add a species, browse the collection and each
// species' page (#species/<name>: its photos with provenance, add and delete).
// Plain JavaScript against the HTTP API (/v1/...); no build step, no external resources.
"use strict";

const MAX_QUERY_PHOTOS_DEFAULT = 5;
const MAX_ENROLL_PHOTOS_DEFAULT = 50;
const PAGE_SIZE = 60; // photos per page of a species page
const REFERENCE_PHOTOS = 3; // reference photos shown beside each candidate
const state = {
  info: null,
  photos: [], // chosen for identification
  photoNotes: "", // what choosing them left out
  unreadable: new Set(), // chosen photos the browser cannot show
  page: null, // the species page on show: { name, next, total }
  references: new Map(), // species -> Promise of a few of its photos
  flash: "", // said once the next view has loaded
  names: new Map(), // stored species name -> as shown (GET /v1/taxa)
};

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message || "";
}

function setNotice(id, message) {
  const box = $(id);
  box.textContent = message || "";
  box.hidden = !message;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// "a.jpg, b.jpg and c.jpg"
function listNames(files) {
  const names = files.map((f) => f.name || "a file");
  return names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

// Text with each percentage ("> 99 %", "12 %") kept on one line.
function setTextKeepingNumbers(element, text) {
  element.replaceChildren();
  const parts = (text || "").split(/((?:[<>] )?\d+(?:\.\d+)? %)/);
  parts.forEach((part, i) => {
    if (!part) return;
    if (i % 2) {
      const span = document.createElement("span");
      span.className = "nowrap";
      span.textContent = part;
      element.append(span);
    } else {
      element.append(part);
    }
  });
}

function speciesHref(name) {
  return `#species/${encodeURIComponent(name)}`;
}

// A taxon name as shown: the server's spelling (GET /v1/taxa, index.names.display_name) when
// it lists the name, else the same rule here (underscores as spaces, "Genus species" as
// "Genus sp.").
function displayName(name) {
  const known = state.names.get(name || "");
  if (known) return known;
  const words = (name || "").replace(/[_\s]+/g, " ").trim().split(" ");
  const placeholder = ["species", "sp", "sp.", "spp", "spp.", "indet", "indet.", "unknown"];
  if (words.length === 2 && /^[A-Z]/.test(words[0]) && placeholder.includes(words[1].toLowerCase())) {
    words[1] = "sp.";
  }
  return words.join(" ");
}

// Number format of the server's wording (api/wording.py percent): never claims certainty.
function percent(p) {
  if (p > 0.99) return "> 99 %";
  if (p > 0 && p < 0.01) return "< 1 %";
  return `${Math.round(100 * p)} %`;
}

// Genus then family (rank order); the genus only when it is not the first word of the name.
function taxonText(c) {
  const genus = c.genus && !c.species.startsWith(`${c.genus}_`) ? displayName(c.genus) : "";
  return [genus, c.family].filter(Boolean).join(", ");
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
    $("sp-key-field").hidden = false;
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
    if (response.ok) {
      img.src = URL.createObjectURL(await response.blob());
      return;
    }
  } catch (err) {
    /* a missing thumbnail is not worth an error message */
  }
  img.dispatchEvent(new Event("error")); // no broken image left on the page
}

// ------------------------------------------------------------------ views
// The address says what is on show: #identify (or nothing), #enroll, #species (the
// collection) or #species/<name> (a species page), so the back button and links work.
function showView(name, tab = name) {
  for (const button of document.querySelectorAll(".tab")) {
    if (button.dataset.view === tab) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.id !== `view-${name}`;
  }
  showError("");
  if (name === "species") loadSpecies();
}

function route() {
  let hash = "";
  try {
    hash = decodeURIComponent(window.location.hash.slice(1));
  } catch (err) {
    hash = "";
  }
  if (hash.startsWith("species/") && hash.length > "species/".length) {
    showSpeciesPage(hash.slice("species/".length));
  } else {
    showView(["enroll", "species"].includes(hash) ? hash : "identify");
  }
}

function go(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

// --------------------------------------------------------------- identify
function maxQueryPhotos() {
  return state.info ? state.info.limits.max_query_files : MAX_QUERY_PHOTOS_DEFAULT;
}

function maxEnrollPhotos() {
  return state.info ? state.info.limits.max_enroll_files : MAX_ENROLL_PHOTOS_DEFAULT;
}

// The file input shows what will be sent (so it never says "7 files" when 5 are kept).
function setInputFiles(input, files) {
  try {
    const transfer = new DataTransfer();
    for (const file of files) transfer.items.add(file);
    input.files = transfer.files;
  } catch (err) {
    input.value = "";
  }
}

// Photos a form may send: images only, at most ``limit``; the rest left out, and a sentence
// saying which and why ("" when nothing was left out).
function keepPhotos(fileList, limit, what) {
  const chosen = Array.from(fileList || []);
  const notes = [];
  const others = chosen.filter((f) => f.type && !f.type.startsWith("image/"));
  let files = chosen.filter((f) => !f.type || f.type.startsWith("image/"));
  if (others.length) {
    notes.push(`Left out ${listNames(others)}: not ${others.length === 1 ? "a photo" : "photos"}.`);
  }
  if (files.length > limit) {
    const dropped = files.slice(limit);
    files = files.slice(0, limit);
    notes.push(
      `You chose ${files.length + dropped.length} photos, but at most ${limit} ${what}. ` +
        `Only the first ${limit} will be sent; left out: ${listNames(dropped)}.`,
    );
  }
  return { files, note: notes.join(" ") };
}

function choosePhotos(fileList) {
  const { files, note } = keepPhotos(fileList, maxQueryPhotos(), "can be identified together");
  showError("");
  state.photos = files;
  state.photoNotes = note;
  state.unreadable = new Set();
  setInputFiles($("identify-photos"), files);
  renderPreviews();
  $("result").hidden = true;
}

function updatePhotoNotice() {
  const unreadable = Array.from(state.unreadable);
  const problem = unreadable.length
    ? `This browser cannot show ${unreadable.join(", ")}: ${unreadable.length === 1 ? "it is" : "they are"} ` +
      "damaged or not an image it can read. Identify will say whether the server can use " +
      `${unreadable.length === 1 ? "it" : "them"}; or remove ${unreadable.length === 1 ? "it" : "them"}.`
    : "";
  setNotice("identify-notice", [state.photoNotes, problem].filter(Boolean).join(" "));
}

// One tile per chosen photo: the photo (or a message when the browser cannot show it), its
// file name and a button to remove it.
function renderPreviews() {
  const list = $("identify-previews");
  list.replaceChildren();
  state.photos.forEach((file, i) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.alt = `Chosen photo ${i + 1}: ${file.name}`;
    img.addEventListener("error", () => {
      const message = document.createElement("span");
      message.className = "nopreview";
      message.textContent = "Cannot show this file";
      img.replaceWith(message);
      state.unreadable.add(file.name);
      updatePhotoNotice();
    });
    img.src = URL.createObjectURL(file);
    const name = document.createElement("span");
    name.className = "fname";
    name.textContent = file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    remove.addEventListener("click", () => {
      state.photos = state.photos.filter((f) => f !== file);
      state.unreadable.delete(file.name);
      state.photoNotes = "";
      setInputFiles($("identify-photos"), state.photos);
      renderPreviews();
    });
    item.append(img, name, remove);
    list.append(item);
  });
  updatePhotoNotice();
  $("identify-submit").disabled = state.photos.length === 0;
  $("result").hidden = true;
}

// A candidate row: the name (and family / genus), then its probability with its bar
// (rejections show no candidate rows: see renderResult).
function candidateRow(label, taxon, probability, species = null) {
  const item = document.createElement("li");
  const name = document.createElement(species ? "a" : "span");
  if (species) {
    name.href = speciesHref(species);
    name.title = `All photos of ${label} in the collection`;
  }
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
  }
  item.append(name, value, bar);
  if (species) item.append(referencePhotos(species, label));
  return item;
}

// A few photos of the species, spread over its specimens (one request per species, kept).
function speciesReferences(species) {
  if (!state.references.has(species)) {
    const path = `/v1/species/${encodeURIComponent(species)}/photos?limit=24`;
    const pending = api(path)
      .then((page) => {
        const seen = new Set();
        const spread = page.photos.filter((p) => !seen.has(p.specimen) && seen.add(p.specimen));
        const rest = page.photos.filter((p) => !spread.includes(p));
        return { photos: [...spread, ...rest].slice(0, REFERENCE_PHOTOS), total: page.total };
      })
      .catch(() => {
        state.references.delete(species);
        return { photos: [], total: 0 };
      });
    state.references.set(species, pending);
  }
  return state.references.get(species);
}

// The candidate's own reference photos (as Pl@ntNet shows per candidate), linking to its page.
function referencePhotos(species, label) {
  const strip = document.createElement("div");
  strip.className = "refs";
  speciesReferences(species).then(({ photos, total }) => {
    for (const photo of photos) {
      const link = document.createElement("a");
      link.href = speciesHref(species);
      const img = document.createElement("img");
      img.alt = `${label}: ${photo.filename || "enrolled photo"}`;
      img.title = `${label} — ${photo.filename || photo.id}`;
      img.addEventListener("error", () => link.remove());
      setImage(img, photo.thumbnail_url);
      link.append(img);
      strip.append(link);
    }
    if (total > photos.length) {
      const more = document.createElement("a");
      more.className = "more";
      more.href = speciesHref(species);
      more.textContent = `all ${total} photos`;
      strip.append(more);
    }
  });
  return strip;
}

// Every word about the answer comes from the server (summary, detail, headings); the page only
// formats numbers.
function renderResult(result) {
  const summary = $("result-summary");
  setTextKeepingNumbers(summary, result.summary);
  summary.className = `summary ${result.decision}`;
  const detail = $("result-detail");
  setTextKeepingNumbers(detail, result.detail || "");
  detail.hidden = !result.detail;
  $("result-candidates-title").textContent = result.candidates_heading || "";
  $("result-similar-title").textContent = result.similar_heading || "";
  // A rejection names no species: the detail line (the closest species and its similarity)
  // is all it shows, without candidate rows or "not a match" photos.
  const rejected = result.decision === "unknown_species" || result.decision === "out_of_domain";
  for (const part of ["candidates-title", "candidates", "similar-title", "similar"]) {
    $(`result-${part}`).hidden = rejected;
  }

  const list = $("result-candidates");
  list.replaceChildren();
  list.className = `candidates ${result.decision}`;
  for (const c of rejected ? [] : result.candidates) {
    list.append(
      candidateRow(displayName(c.species), taxonText(c), c.probability, c.species),
    );
  }
  const none = result.none_probability;
  if (none !== null && none !== undefined && result.candidates.some((c) => c.probability != null)) {
    const row = candidateRow("None of these", "", none);
    row.classList.add("none");
    list.append(row);
  }

  const gallery = $("result-similar");
  gallery.replaceChildren();
  for (const s of rejected ? [] : result.similar) {
    const item = document.createElement("li");
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = `Reference photo of ${displayName(s.species)}`;
    img.loading = "lazy";
    setImage(img, s.image_url);
    const caption = document.createElement("figcaption");
    const link = document.createElement("a");
    link.href = speciesHref(s.species);
    link.textContent = displayName(s.species);
    caption.append(link);
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
  const subset = $("filter-subset").value.trim();
  if (subset) form.append("subset", subset); // one name per line, checked by the server
  const button = $("identify-submit");
  button.disabled = true;
  showError("");
  setStatus("Identifying…");
  try {
    const query = params.toString() ? `?${params}` : "";
    const result = await api(`/v1/identify${query}`, { method: "POST", body: form });
    renderResult(result);
    setStatus("");
    revealResult();
  } catch (err) {
    $("result").hidden = true;
    setStatus("");
    showError(err.message);
    $("error").scrollIntoView({ block: "center" });
  } finally {
    button.disabled = state.photos.length === 0;
  }
}

// Bring the answer into view (on a phone it starts below the form) and move the focus to it,
// so a screen reader reads it next.
function revealResult() {
  const box = $("result");
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  box.focus({ preventScroll: true });
  box.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
}

// ------------------------------------------------------------------ taxa
// What the filters can name (GET /v1/taxa): suggestions for the region, genus and family
// fields and the taxa list, and each species' name as the server spells it.
async function loadTaxa() {
  let taxa = null;
  try {
    taxa = await api("/v1/taxa");
  } catch (err) {
    return; // suggestions are optional: the fields still take any text
  }
  state.names = new Map(taxa.species.map((s) => [s.species, s.name]));
  const fill = (id, values) => {
    $(id).replaceChildren(
      ...values.map((value) => {
        const option = document.createElement("option");
        option.value = value;
        return option;
      }),
    );
  };
  fill("known-regions", taxa.regions);
  fill("known-genera", taxa.genera);
  fill("known-families", taxa.families);
  fill("known-taxa", [...taxa.species.map((s) => s.name), ...taxa.genera, ...taxa.families]);
}

// A name picked from the suggestions joins the taxa list (one per line).
function addTaxon() {
  const input = $("filter-add-taxon");
  const name = input.value.trim();
  const known = Array.from($("known-taxa").options, (o) => o.value);
  if (!known.includes(name)) return;
  const list = $("filter-subset");
  const names = list.value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!names.includes(name)) list.value = [...names, name].join("\n");
  input.value = "";
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
  const { files, note } = keepPhotos($("enroll-photos").files, maxEnrollPhotos(), "can be added at once");
  showError("");
  setNotice("enroll-notice", note);
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
    loadTaxa(); // a new species, genus or region to offer
    $("enroll-photos").value = "";
    setNotice("enroll-notice", "");
    state.references.delete(report.species);
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
      const card = document.createElement("a");
      card.className = "card";
      card.href = speciesHref(s.species);
      let thumb;
      if (s.thumbnail_url) {
        thumb = document.createElement("img");
        thumb.alt = `Photo of ${displayName(s.species)}`;
        thumb.loading = "lazy";
        thumb.addEventListener("error", () => {
          const none = document.createElement("span");
          none.className = "noimg";
          thumb.replaceWith(none);
        });
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
      const counts = s.specimens && s.specimens !== s.count
        ? `${plural(s.count, "photo")} of ${plural(s.specimens, "specimen")}`
        : plural(s.count, "photo");
      meta.textContent = `${counts}${taxon ? ` · ${taxon}` : ""}`;
      text.append(name, meta);
      card.append(thumb, text);
      item.append(card);
      list.append(item);
    }
    setStatus(state.flash || "");
    state.flash = "";
  } catch (err) {
    setStatus("");
    showError(err.message);
  }
}

// ----------------------------------------------------------- species page
async function showSpeciesPage(name) {
  showView("species-page", "species");
  window.scrollTo(0, 0);
  state.page = { name, next: 0, total: 0 };
  $("sp-title").textContent = displayName(name);
  $("sp-body").hidden = true;
  $("sp-photos").replaceChildren();
  $("sp-add-result").hidden = true;
  setNotice("sp-add-notice", "");
  setStatus("Loading the photos…");
  try {
    const page = await api(`/v1/species/${encodeURIComponent(name)}/photos?limit=${PAGE_SIZE}`);
    if (!state.page || state.page.name !== name) return; // another page was opened meanwhile
    state.page = { name: page.species, next: page.next_offset, total: page.total };
    renderSpeciesHeader(page);
    appendPhotos(page);
    $("sp-body").hidden = false;
    setStatus("");
  } catch (err) {
    setStatus("");
    showError(err.message);
  }
}

function renderSpeciesHeader(page) {
  $("sp-title").textContent = displayName(page.species);
  const taxonomy = { ...page.taxonomy };
  if (page.genus) taxonomy.genus = page.genus;
  if (page.family) taxonomy.family = page.family;
  const order = ["accepted_name", "genus", "family", "order", "region"]; // rank order
  const keys = [
    ...order.filter((k) => taxonomy[k]),
    ...Object.keys(taxonomy).filter((k) => !order.includes(k) && taxonomy[k]).sort(),
  ];
  const list = $("sp-taxonomy");
  list.replaceChildren();
  for (const key of keys) {
    const term = document.createElement("dt");
    term.textContent = key.charAt(0).toUpperCase() + key.slice(1).replace(/_/g, " ");
    const value = document.createElement("dd");
    value.textContent = key === "genus" ? displayName(taxonomy[key]) : taxonomy[key];
    if (key === "genus") value.className = "italic";
    list.append(term, value);
  }
  list.hidden = keys.length === 0;
  $("sp-counts").textContent =
    `${plural(page.total, "photo")} of ${plural(page.specimens, "specimen")}.`;
  $("sp-specimens-title").textContent = `Photos per specimen (${page.specimens})`;
  $("sp-specimens-box").open = page.specimens <= 12;
  const chips = $("sp-specimens");
  chips.replaceChildren();
  for (const item of page.by_specimen) {
    const chip = document.createElement("li");
    chip.textContent = `${item.specimen}: ${item.photos}`;
    chips.append(chip);
  }
  $("sp-delete").textContent = `Delete ${displayName(page.species)} and its ${plural(page.total, "photo")}`;
}

function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

// One card per photo: the thumbnail (opening the stored copy), where the photo came from, and
// a delete button.
function appendPhotos(page) {
  const grid = $("sp-photos");
  const open = !(state.info && state.info.reads_need_key); // plain links cannot send a key
  for (const photo of page.photos) {
    const item = document.createElement("li");
    const frame = document.createElement(open ? "a" : "div");
    frame.className = "frame";
    if (open) {
      frame.href = photo.image_url;
      frame.target = "_blank";
      frame.rel = "noopener";
    }
    const img = document.createElement("img");
    img.alt = `${displayName(page.species)}: ${photo.filename || photo.id}`;
    img.loading = "lazy";
    img.addEventListener("error", () => {
      const none = document.createElement("span");
      none.className = "nopreview";
      none.textContent = "No thumbnail";
      img.replaceWith(none);
    });
    setImage(img, photo.thumbnail_url);
    frame.append(img);
    const about = document.createElement("div");
    about.className = "prov";
    const file = document.createElement("div");
    file.className = "fname";
    file.textContent = photo.filename || `photo ${photo.id}`;
    about.append(file);
    const lines = [
      ["Specimen", photo.specimen],
      ["Source", photo.source],
      ["Region", photo.region],
      ["Added", formatDate(photo.created)],
    ];
    for (const [label, value] of lines) {
      if (!value) continue;
      const line = document.createElement("div");
      line.className = "meta";
      line.textContent = `${label}: ${value}`;
      about.append(line);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete-photo";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${photo.filename || photo.id}`);
    remove.addEventListener("click", () => deletePhoto(page.species, photo));
    item.append(frame, about, remove);
    grid.append(item);
  }
  $("sp-more").hidden = page.next_offset === null || page.next_offset === undefined;
  const shown = grid.children.length;
  if (shown < page.total) {
    $("sp-more").textContent = `Show more photos (${shown} of ${page.total} shown)`;
  }
}

async function morePhotos() {
  const current = state.page;
  if (!current || current.next === null || current.next === undefined) return;
  const button = $("sp-more");
  button.disabled = true;
  try {
    const path = `/v1/species/${encodeURIComponent(current.name)}/photos`;
    const page = await api(`${path}?offset=${current.next}&limit=${PAGE_SIZE}`);
    current.next = page.next_offset;
    appendPhotos(page);
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
  }
}

async function deletePhoto(species, photo) {
  const label = photo.filename || photo.id;
  if (!window.confirm(`Delete ${label} from ${displayName(species)}? This cannot be undone.`)) return;
  showError("");
  try {
    await api(`/v1/specimens/${encodeURIComponent(photo.id)}`, { method: "DELETE" }, true);
    state.references.delete(species);
    const last = state.page && state.page.total <= 1;
    if (last) {
      state.flash = `Deleted ${label}, the last photo of ${displayName(species)}.`;
      go("#species");
      return;
    }
    await showSpeciesPage(species);
    setStatus(`Deleted ${label}.`);
  } catch (err) {
    showError(err.message);
  }
}

async function deleteSpecies() {
  const current = state.page;
  if (!current) return;
  const name = displayName(current.name);
  const question = `Delete ${name} and all its ${plural(current.total, "photo")}? This cannot be undone.`;
  if (!window.confirm(question)) return;
  showError("");
  try {
    const path = `/v1/species/${encodeURIComponent(current.name)}`;
    const done = await api(path, { method: "DELETE" }, true);
    state.references.delete(current.name);
    state.flash = `Deleted ${name} (${plural(done.removed, "photo")}).`;
    go("#species");
  } catch (err) {
    showError(err.message);
  }
}

async function addPhotos(event) {
  event.preventDefault();
  const current = state.page;
  if (!current) return;
  const input = $("sp-add-photos");
  const { files, note } = keepPhotos(input.files, maxEnrollPhotos(), "can be added at once");
  setNotice("sp-add-notice", note);
  showError("");
  $("sp-add-result").hidden = true;
  if (!files.length) {
    showError("Choose at least one photo to add.");
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  const button = $("sp-add-submit");
  button.disabled = true;
  setStatus("Adding photos…");
  try {
    const path = `/v1/species/${encodeURIComponent(current.name)}/images`;
    const report = await api(path, { method: "POST", body: form }, true);
    state.references.delete(current.name);
    input.value = "";
    await showSpeciesPage(current.name);
    const parts = [`Added ${plural(report.added, "photo")}`];
    if (report.duplicates.length) parts.push(`${report.duplicates.length} already there`);
    const done = $("sp-add-result");
    done.textContent = `${parts.join("; ")}. ${displayName(report.species)} now has ${plural(report.total, "photo")}.`;
    done.hidden = false;
  } catch (err) {
    showError(err.message);
  } finally {
    setStatus("");
    button.disabled = false;
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
    $("sp-key-field").hidden = !state.info.writes_need_key;
    $("read-key-bar").hidden = !state.info.reads_need_key;
    setStatus("");
    loadTaxa();
    loadTryThese();
  } catch (err) {
    setStatus("The server cannot be reached.");
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => go(`#${tab.dataset.view}`));
  }
  window.addEventListener("hashchange", route);
  // One write key, typed in either place (the enrol form or a species page).
  for (const [from, to] of [["api-key", "sp-api-key"], ["sp-api-key", "api-key"]]) {
    $(from).addEventListener("input", () => {
      $(to).value = $(from).value;
    });
  }
  $("read-key").addEventListener("change", route); // a key typed after a refusal: show it now
  $("sp-add-form").addEventListener("submit", addPhotos);
  $("sp-delete").addEventListener("click", deleteSpecies);
  $("sp-more").addEventListener("click", morePhotos);
  $("identify-photos").addEventListener("change", (e) => choosePhotos(e.target.files));
  $("identify-form").addEventListener("submit", identify);
  $("filter-add-taxon").addEventListener("change", addTaxon);
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
  route();
}

document.addEventListener("DOMContentLoaded", wire);
