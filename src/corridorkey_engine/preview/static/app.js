// The CorridorKey preview page: every request carries the token of the page's URL.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const state = { clips: [], clip: null, index: 0, seq: 0, scale: 1, tx: 0, ty: 0, fit: true, size: null };

function url(path, params = {}) {
  const u = new URL(path, location.origin);
  u.searchParams.set("token", token);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u;
}

async function call(method, path, params = {}, body = undefined) {
  const init = { method, headers: { "Content-Type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(url(path, params), init);
  const text = await r.text();
  if (!r.ok) throw new Error(text);
  return text ? JSON.parse(text) : null;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function current() { return state.clips.find((c) => c.id === state.clip); }

// ---- frames and views --------------------------------------------------------------------------
// A view is fetched as PNG, decoded off the page (createImageBitmap: an <img> decode stalled 300-400 ms
// now and then on 1080p frames), and returned as a function that paints it on its canvas, so that the
// views of a wipe change together.
async function loadView(canvas, view) {
  const r = await fetch(url("/api/view", { clip: state.clip, frame: state.index, view, bg: $("bg").value }));
  if (!r.ok) throw new Error(await r.text());
  const bitmap = await createImageBitmap(await r.blob(), { colorSpaceConversion: "none" });
  return () => {
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width; canvas.height = bitmap.height;
    }
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
  };
}

let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    do {
      again = false;
      const seq = ++state.seq;
      const command = $("command").textContent;  // the settings this picture is made with
      const started = performance.now();
      const jobs = [loadView($("imgA"), $("viewA").value)];
      if ($("wipe").checked) jobs.push(loadView($("imgB"), $("viewB").value));
      for (const paint of await Promise.all(jobs)) paint();
      const shown = $("imgA");
      const first = !state.size || state.size[0] !== shown.width || state.size[1] !== shown.height;
      state.size = [shown.width, shown.height];
      if (first || state.fit) fitView();
      placeWipe();
      const viewport = $("viewport");
      viewport.dataset.frame = String(state.index);
      viewport.dataset.seq = String(seq);
      viewport.dataset.command = command;
      say(`frame ${numberOf(state.index)} shown in ${Math.round(performance.now() - started)} ms`);
    } while (again);
  } catch (e) {
    say(e.message, true);
  } finally {
    busy = false;
  }
}

function numberOf(index) { const c = current(); return c && c.numbers ? c.numbers[index] : index; }

function goto(index) {
  const c = current();
  if (!c || !c.frames) return;
  state.index = Math.max(0, Math.min(c.frames - 1, index));
  $("scrub").value = state.index;
  $("number").value = numberOf(state.index);
  refresh();
}

// ---- zoom, pan, wipe, pixel readout -------------------------------------------------------------
function applyTransform() {
  if (state.size) { $("stage").style.width = `${state.size[0]}px`; $("stage").style.height = `${state.size[1]}px`; }
  $("stage").style.transform = `translate(${state.tx}px, ${state.ty}px) scale(${state.scale})`;
}
function fitView() {
  if (!state.size) return;
  const vp = $("viewport").getBoundingClientRect();
  state.scale = Math.min(vp.width / state.size[0], vp.height / state.size[1]);
  state.tx = (vp.width - state.size[0] * state.scale) / 2;
  state.ty = (vp.height - state.size[1] * state.scale) / 2;
  state.fit = true;
  applyTransform();
}
function oneToOne() {
  if (!state.size) return;
  const vp = $("viewport").getBoundingClientRect();
  state.scale = 1;
  state.tx = Math.round((vp.width - state.size[0]) / 2);
  state.ty = Math.round((vp.height - state.size[1]) / 2);
  state.fit = false;
  applyTransform();
}
function placeWipe() {
  document.body.classList.toggle("wipe", $("wipe").checked);
  if (!state.size) return;
  const x = Math.round(state.size[0] * $("wipepos").value / 100);
  $("imgB").style.clipPath = `inset(0 0 0 ${x}px)`;
  $("wipeline").style.left = `${x}px`;
}
function imagePoint(e) {
  const r = $("stage").getBoundingClientRect();
  return [Math.floor((e.clientX - r.left) / state.scale), Math.floor((e.clientY - r.top) / state.scale)];
}

let drag = null, reading = false;
function setupViewport() {
  const vp = $("viewport");
  vp.addEventListener("mousedown", (e) => { drag = [e.clientX - state.tx, e.clientY - state.ty]; });
  window.addEventListener("mouseup", () => { drag = null; });
  vp.addEventListener("mousemove", async (e) => {
    if (drag) {
      state.tx = e.clientX - drag[0]; state.ty = e.clientY - drag[1]; state.fit = false; applyTransform();
      return;
    }
    if (reading || !state.size) return;
    const [x, y] = imagePoint(e);
    if (x < 0 || y < 0 || x >= state.size[0] || y >= state.size[1]) return;
    reading = true;
    try {
      const p = await call("GET", "/api/pixel", { clip: state.clip, frame: state.index, x, y });
      const f = (v) => v.map((n) => n.toFixed(3)).join(" ");
      $("readout").textContent = `x ${x} y ${y}\ninput ${f(p.input)}\nhint ${f(p.hint)}\nmatte ${f(p.matte)}` +
        `\nFG ${f(p.fg)}\nprocessed RGBA ${f(p.processed)}`;
    } catch (err) { say(err.message, true); } finally { reading = false; }
  });
  vp.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = vp.getBoundingClientRect();
    const factor = e.deltaY < 0 ? 1.25 : 0.8;
    const cx = e.clientX - r.left, cy = e.clientY - r.top;
    state.tx = cx - (cx - state.tx) * factor; state.ty = cy - (cy - state.ty) * factor;
    state.scale *= factor; state.fit = false; applyTransform();
  }, { passive: false });
  window.addEventListener("resize", () => { if (state.fit) fitView(); });
}

// ---- settings ----------------------------------------------------------------------------------
function readSettings() {
  const size = $("img_size").value.trim();
  const linear = $("linear").value;
  return {
    despill: Number($("despill").value),
    despeckle: $("despeckle").checked,
    despeckle_size: parseInt($("despeckle_size").value, 10),
    refiner_scale: Number($("refiner_scale").value),
    screen_color: $("screen_color").value,
    img_size: size ? parseInt(size, 10) : null,
    precision: $("precision").value || null,
    hint: $("hint").value,
    linear: linear === "" ? null : linear === "true",
    frames: $("frames").value.trim() || null,
  };
}

function showSettings(s) {
  $("despill").value = s.despill; $("despillOut").textContent = Number(s.despill).toFixed(2);
  $("despeckle").checked = s.despeckle; $("despeckle_size").value = s.despeckle_size;
  $("refiner_scale").value = s.refiner_scale; $("screen_color").value = s.screen_color;
  $("img_size").value = s.img_size ?? ""; $("precision").value = s.precision ?? "";
  $("hint").value = s.hint; $("linear").value = s.linear === null ? "" : String(s.linear);
  $("frames").value = s.frames ?? "";
}

// One settings request at a time, in order: changes made while one is on its way (a slider being dragged)
// are sent together as soon as it returns, so the server always ends with the latest settings.
const sending = { busy: false, again: false, rekey: false };
async function sendSettings(rekey) {
  sending.rekey ||= rekey;
  if (sending.busy) { sending.again = true; return; }
  sending.busy = true;
  try {
    do {
      sending.again = false;
      const engineChanged = sending.rekey;
      sending.rekey = false;
      const r = await call("POST", "/api/settings", { clip: state.clip }, readSettings());
      current().settings = r.settings; current().command = r.command;
      $("command").textContent = r.command;
      $("despillOut").textContent = Number(r.settings.despill).toFixed(2);
      if (engineChanged) await showEngine();
    } while (sending.again);
  } catch (e) { say(e.message, true); return; }
  finally { sending.busy = false; }
  await refresh();
}

async function showEngine() {
  try { $("engine").textContent = (await call("GET", "/api/engine", { clip: state.clip })).engine; }
  catch (e) { say(e.message, true); }
}

// ---- render ------------------------------------------------------------------------------------
function showRender(s) {
  $("progress").max = Math.max(1, s.total); $("progress").value = s.done;
  $("renderState").textContent = s.state === "running"
    ? `rendering ${s.clip}: ${s.done}/${s.total} frames, ${s.fps} frames/s` : s.message;
  $("renderState").dataset.state = s.state;
  $("render").disabled = s.state === "running"; $("cancel").disabled = s.state !== "running";
  if (s.state === "failed") say(s.message, true);
}
async function poll() {
  const s = await call("GET", "/api/render");
  showRender(s);
  if (s.state === "running") setTimeout(poll, 250);
}

// ---- start -------------------------------------------------------------------------------------
async function selectClip(id) {
  state.clip = id; state.size = null;
  const c = current();
  $("command").textContent = c.command;
  showSettings(c.settings);
  if (c.error) { say(c.error, true); return; }
  if (c.warning) say(c.warning, true);
  $("scrub").max = c.frames - 1;
  await showEngine();
  goto(0);
}

async function main() {
  const s = await call("GET", "/api/state");
  state.clips = s.clips;
  for (const c of s.clips) $("clip").add(new Option(c.error ? `${c.id} (error)` : c.id, c.id));
  for (const v of s.views) { $("viewA").add(new Option(v, v)); $("viewB").add(new Option(v, v)); }
  for (const b of s.backgrounds) $("bg").add(new Option(b, b));
  $("viewA").value = "comp"; $("viewB").value = "input";
  $("clip").onchange = () => selectClip($("clip").value);
  $("scrub").oninput = () => goto(Number($("scrub").value));
  $("prev").onclick = () => goto(state.index - 1);
  $("next").onclick = () => goto(state.index + 1);
  $("number").onchange = () => {
    const i = current().numbers.indexOf(Number($("number").value));
    if (i >= 0) goto(i); else say(`no frame ${$("number").value} in ${state.clip}`, true);
  };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox")) return;
    if (e.key === "ArrowLeft") { e.preventDefault(); goto(state.index - 1); }
    if (e.key === "ArrowRight") { e.preventDefault(); goto(state.index + 1); }
  });
  for (const id of ["viewA", "viewB", "bg", "wipe"]) $(id).onchange = refresh;
  $("wipepos").oninput = placeWipe;
  $("fit").onclick = fitView; $("one").onclick = oneToOne;
  $("despill").oninput = () => sendSettings(false);
  for (const id of ["despeckle", "despeckle_size", "frames"]) $(id).onchange = () => sendSettings(false);
  for (const id of ["refiner_scale", "screen_color", "img_size", "precision", "hint", "linear"]) {
    $(id).onchange = () => sendSettings(true);
  }
  $("copy").onclick = async () => {
    const text = $("command").textContent;
    try { await navigator.clipboard.writeText(text); say("command line copied"); }
    catch { const r = document.createRange(); r.selectNodeContents($("command"));
      getSelection().removeAllRanges(); getSelection().addRange(r); document.execCommand("copy");
      say("command line copied"); }
  };
  $("save").onclick = async () => {
    try { say(`settings saved to ${(await call("POST", "/api/save", { clip: state.clip })).saved}`); }
    catch (e) { say(e.message, true); }
  };
  $("render").onclick = async () => {
    try { showRender(await call("POST", "/api/render", { clip: state.clip })); poll(); }
    catch (e) { say(e.message, true); }
  };
  $("cancel").onclick = async () => { try { await call("POST", "/api/render/cancel"); } catch (e) { say(e.message, true); } };
  setupViewport();
  showRender(await call("GET", "/api/render"));
  const first = s.clips.find((c) => !c.error) || s.clips[0];
  if (first) { $("clip").value = first.id; await selectClip(first.id); }
}

main().catch((e) => say(e.message, true));
