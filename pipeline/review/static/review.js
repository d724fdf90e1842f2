// The review page: sign in, pick a scan from a worklist, read it, decide. No framework, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { csrf: null, key: null, slices: 1, opened: 0 };

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401 && path !== "/api/signin") showSignIn();
  return response;
}

function showSignIn() {
  $("app").hidden = true;
  $("signin-form").hidden = false;
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
  for (const [name, id] of [["to_label", "to-label"], ["flagged", "flagged"], ["disagreements", "disagreements"]]) {
    const list = lists[name];
    $(`count-${id}`).textContent = `${list.done}/${list.count}`;
    const ol = $(`worklist-${id}`);
    ol.replaceChildren(...list.items.map((item) => {
      const li = document.createElement("li");
      li.textContent = item.series_key + (item.score !== undefined ? ` (${item.score.toFixed(2)})` : "");
      li.dataset.key = item.series_key;
      li.className = (item.done ? "done " : "") + (item.series_key === state.key ? "active" : "");
      li.onclick = () => openScan(item.series_key);
      return li;
    }));
  }
  const agreement = await (await api("/api/agreement")).json();
  $("kappa").textContent = agreement.pairs
    .map((p) => `κ ${p.a}/${p.b}: ${p.kappa === null ? "n/a" : p.kappa.toFixed(2)} over ${p.scans}`).join("; ");
}

async function openScan(key) {
  const info = await (await api(`/api/scans/${key}`)).json();
  state.key = key;
  state.slices = info.slices;
  state.opened = performance.now();
  $("scan-key").textContent = key;
  $("slice").max = info.slices - 1;
  $("slice").value = Math.floor(info.slices / 2);
  $("preset").replaceChildren(...info.presets.map((p) => new Option(p, p)));
  $("finding").value = info.finding;
  for (const b of document.querySelectorAll("#decisions button")) {
    b.classList.toggle("chosen", b.dataset.decision === info.decision);
  }
  await draw();
  await refresh();
}

async function draw() {
  if (!state.key) return;
  const index = Number($("slice").value);
  $("slice-label").textContent = `${index + 1}/${state.slices}`;
  const url = `/api/scans/${state.key}/image.png?slice=${index}&preset=${$("preset").value}`;
  const response = await api(url);
  if (response.ok) {
    URL.revokeObjectURL($("image").src);
    $("image").src = URL.createObjectURL(await response.blob());
    $("scan-problem").textContent = "";
  } else {
    const body = await response.json();
    $("scan-problem").textContent = body.reason || body.error;
  }
}

function step(delta) {
  const slider = $("slice");
  slider.value = Math.min(Math.max(Number(slider.value) + delta, 0), state.slices - 1);
  draw();
}

async function decide(decision) {
  if (!state.key) return;
  const seconds = (performance.now() - state.opened) / 1000;
  const response = await api(`/api/scans/${state.key}/decision`, {
    method: "POST",
    body: JSON.stringify({ decision, finding: $("finding").value, seconds }),
  });
  const body = await response.json();
  $("status").textContent = response.ok ? `${decision} saved` : body.error;
  if (response.ok) await openScan(state.key);
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
  if (event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT") return;
  const keys = { n: "normal", a: "abnormal", u: "unsure", s: "skip" };
  if (keys[event.key]) decide(keys[event.key]);
  else if (event.key === "ArrowLeft" || event.key === "ArrowDown") step(-1);
  else if (event.key === "ArrowRight" || event.key === "ArrowUp") step(1);
});

api("/api/me").then(async (r) => (r.ok ? started(await r.json()) : showSignIn()));
