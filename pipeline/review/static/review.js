// The review page: sign in, pick a scan from a worklist, read it, decide. No framework, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { csrf: null, key: null, list: null, lists: null, slices: 1, opened: 0, deciding: false, drawing: null, polling: null };

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401 && path !== "/api/signin") showSignIn();
  return response;
}

function showSignIn() {
  clearTimeout(state.polling); // no refresh of the lists while nobody is signed in
  state.polling = null;
  closeScan();
  $("app").hidden = true;
  $("signin-form").hidden = false;
  $("token").focus();
}

// Empties the viewer: a scan, a finding or a decision of one reader must not carry over to whoever signs in next.
function closeScan() {
  state.key = null;
  state.list = null;
  clearImage();
  for (const id of ["scan-key", "scan-problem", "slice-label", "status"]) $(id).textContent = "";
  $("finding").value = "";
  for (const b of document.querySelectorAll("#decisions button")) b.classList.remove("chosen");
}

function clearImage() {
  state.drawing = null;
  URL.revokeObjectURL($("image").src);
  $("image").removeAttribute("src");
}

async function started(me) {
  state.csrf = me.csrf;
  $("who").textContent = `${me.reader} (${me.role})`;
  $("signin-form").hidden = true;
  $("app").hidden = false;
  await refresh();
}

async function refresh() {
  const lists = await (await api("/api/worklists")).json();
  state.lists = lists;
  for (const [name, id] of [["to_label", "to-label"], ["flagged", "flagged"], ["disagreements", "disagreements"]]) {
    const list = lists[name];
    $(`count-${id}`).textContent = `${list.done}/${list.count}`;
    const ol = $(`worklist-${id}`);
    ol.replaceChildren(...list.items.map((item) => {
      const li = document.createElement("li");
      li.textContent = item.series_key + (item.score !== undefined ? ` (${item.score.toFixed(2)})` : "");
      li.dataset.key = item.series_key;
      li.className = (item.done ? "done " : "") + (item.series_key === state.key ? "active" : "");
      li.onclick = () => openScan(item.series_key, name);
      return li;
    }));
  }
  const prepared = lists.prepared;
  $("prepared").textContent = prepared.finished
    ? `${prepared.done} of ${prepared.total} worklist scans ready` +
      (prepared.done < prepared.total ? " (the unpacked folder is full: the rest open slower)" : "")
    : `Preparing worklist scans: ${prepared.done} of ${prepared.total} ready`;
  if (!prepared.finished && !state.polling) {
    state.polling = setTimeout(() => { state.polling = null; refresh(); }, 3000);
  }
  const agreement = await (await api("/api/agreement")).json();
  // One pair a line; a pseudonym is cut to 8 characters (the whole one is its tooltip).
  $("kappa").replaceChildren(...agreement.pairs.map((p) => {
    const li = document.createElement("li");
    li.textContent = `κ ${p.kappa === null ? "n/a" : p.kappa.toFixed(2)} over ${p.scans} · ` +
      `${p.a.slice(0, 8)} / ${p.b.slice(0, 8)}`;
    li.title = `${p.a} / ${p.b}`;
    return li;
  }));
}

async function openScan(key, list) {
  const info = await (await api(`/api/scans/${key}`)).json();
  state.key = key;
  state.list = list;
  state.slices = info.slices;
  state.opened = performance.now();
  $("scan-key").textContent = key;
  clearImage(); // the last scan's image must never show under this scan's key
  $("slice").max = info.slices - 1;
  $("slice").value = Math.floor(info.slices / 2);
  $("preset").replaceChildren(...info.presets.map((p) => new Option(p, p)));
  $("finding").value = info.finding;
  for (const b of document.querySelectorAll("#decisions button")) {
    b.classList.toggle("chosen", b.dataset.decision === info.decision);
  }
  await draw();
  await refresh();
  prefetch(nextScan(key));
}

// While this scan is read, the server loads the one a decision will open next (a CT's gunzip and digest
// check take it a second or two), so that scan's first image is drawn from memory.
function prefetch(key) {
  const item = key && state.lists[state.list]?.items.find((i) => i.series_key === key);
  if (item) fetch(`/api/scans/${key}/image.png?slice=${Math.floor(item.slices / 2)}`).catch(() => {});
}

async function draw() {
  if (!state.key) return;
  const index = Number($("slice").value);
  $("slice-label").textContent = `${index + 1}/${state.slices}`;
  const url = `/api/scans/${state.key}/image.png?slice=${index}&preset=${$("preset").value}`;
  state.drawing = url;
  const response = await api(url);
  // A slower answer for a scan or slice since left must not cover the one asked for last.
  const body = response.ok ? await response.blob() : await response.json();
  if (state.drawing !== url) return;
  if (response.ok) {
    URL.revokeObjectURL($("image").src);
    $("image").src = URL.createObjectURL(body);
    $("scan-problem").textContent = "";
  } else {
    $("scan-problem").textContent = body.reason || body.error;
  }
}

function step(delta) {
  const slider = $("slice");
  slider.value = Math.min(Math.max(Number(slider.value) + delta, 0), state.slices - 1);
  draw();
}

// The scan after key in the list it was picked from that this reader has not decided yet (wrapping round),
// so a worklist is read by keyboard alone; null once all are decided.
function nextScan(key) {
  const items = state.list ? state.lists[state.list].items : [];
  const at = items.findIndex((item) => item.series_key === key);
  const order = [...items.slice(at + 1), ...items.slice(0, at + 1)];
  return order.find((item) => !item.done && item.series_key !== key)?.series_key ?? null;
}

async function decide(decision) {
  // One decision at a time: a second key press before the next scan is open must not land on this one.
  if (!state.key || state.deciding) return;
  state.deciding = true;
  try {
    const key = state.key;
    const seconds = (performance.now() - state.opened) / 1000;
    const response = await api(`/api/scans/${key}/decision`, {
      method: "POST",
      body: JSON.stringify({ decision, finding: $("finding").value, seconds }),
    });
    const body = await response.json();
    if (response.ok) {
      await refresh();
      await openScan(nextScan(key) ?? key, state.list);
    }
    $("status").textContent = response.ok ? `${key}: ${decision} saved` : body.error;
  } finally {
    state.deciding = false;
  }
}

$("signin-form").onsubmit = async (event) => {
  event.preventDefault();
  const response = await api("/api/signin", { method: "POST", body: JSON.stringify({ token: $("token").value }) });
  $("token").value = "";
  if (response.ok) await started(await response.json());
  else $("signin-error").textContent = (await response.json()).error;
};
$("signout").onclick = async () => {
  await api("/api/signout", { method: "POST" });
  state.csrf = null;
  showSignIn();
};
$("export").onclick = async () => {
  const body = await (await api("/api/export", { method: "POST" })).json();
  $("status").textContent = body.error || `exported ${body.normal} normal, ${body.abnormal} abnormal`;
};
for (const b of document.querySelectorAll("#decisions button")) b.onclick = () => decide(b.dataset.decision);
$("slice").oninput = draw;
$("preset").onchange = draw;
$("zoom").oninput = () => { $("image").style.transform = `scale(${$("zoom").value})`; };
$("frame").addEventListener("wheel", (event) => { event.preventDefault(); step(Math.sign(event.deltaY)); });
document.addEventListener("keydown", (event) => {
  // Typing a finding or a token is no shortcut, nor is the browser's own (Ctrl+S must not record "skip").
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.matches("textarea, input:not([type=range])")) return;
  const keys = { n: "normal", a: "abnormal", u: "unsure", s: "skip" };
  const native = event.target.matches("input, select"); // the slice slider and the window list step themselves
  if (keys[event.key]) {
    event.preventDefault(); // a focused window list would jump to a preset starting with the letter
    if (!event.repeat) decide(keys[event.key]); // a held key decides once, not scan after scan
  } else if (!native && (event.key === "ArrowLeft" || event.key === "ArrowDown")) {
    event.preventDefault();
    step(-1);
  } else if (!native && (event.key === "ArrowRight" || event.key === "ArrowUp")) {
    event.preventDefault();
    step(1);
  }
});

api("/api/me").then(async (r) => (r.ok ? started(await r.json()) : showSignIn()));
