// audiogate web page: upload a file or record the microphone, show verdict and spectrogram.
// Plain JS, no dependencies; talks only to this server (GET /model, POST /predict, and the
// /listen WebSocket for the Live mode).
// A server started with an access token gets it from the URL fragment (#token=..., never
// sent to any server, removed from the address bar at once) or from the form the page shows
// on a 401; it is kept in sessionStorage (this tab only) and sent as a Bearer header.
"use strict";

const MAX_RECORD_S = 60;          // recording stops by itself after this many seconds
const COLORMAP = [                // dark -> bright, interpolated for the spectrogram
  [0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191],
];
const SEGMENT_COLORS = { allowed: "#1b7f3b", not_allowed: "#b3261e" };
const OTHER_COLORS = ["#4a6fa5", "#c48a00", "#7b4fa0", "#2a9d8f"];

const $ = (id) => document.getElementById(id);
let recorder = null;              // {context, stream, node, chunks, timer} while recording
let playerUrl = null;
const TOKEN_KEY = "audiogate-token";

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

// ------------------------------------------------------------------ access token
function takeTokenFromUrl() {
  const match = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-form").hidden = false;
  $("model-info").textContent = message;
  $("token-input").focus();
}

async function api(path, options = {}) {   // fetch with the token; a 401 asks for it
  const response = await fetch(path, { ...options, headers: authHeaders() });
  if (response.status === 401) {
    askForToken(sessionStorage.getItem(TOKEN_KEY)
      ? "The access token was not accepted; enter it again."
      : "This server needs an access token.");
  }
  return response;
}

async function loadModelInfo() {
  try {
    const response = await api("/model");
    if (response.status === 401) return;
    const info = await response.json();
    const f1 = info.val_f1 == null ? "n/a" : Number(info.val_f1).toFixed(3);
    $("model-info").textContent =
      `classes: ${info.classes.join(", ")} · window ${info.window_s.toFixed(2)} s · ` +
      `epoch ${info.epoch} · validation macro-F1 ${f1} · backend ${info.backend} · ` +
      `uploads up to ${info.max_upload_mb} MiB / ${info.max_seconds} s`;
    $("report-link").hidden = !info.report;
  } catch (err) {
    $("model-info").textContent = "model information unavailable";
  }
}

async function judge(blob, name) {
  showError("");
  setStatus(`Judging ${name}…`);
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", blob, name);
  let response;
  try {
    response = await api("/predict", { method: "POST", body: form });
  } catch (err) {
    setStatus("");
    showError(`Upload failed: ${err.message}`);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    setStatus("");
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    showError(`Error ${response.status}: ${detail || response.statusText}`);
    return;
  }
  render(body, blob, name);
  setStatus(`Judged ${name} in ${body.elapsed_ms} ms.`);
}

function render(result, blob, name) {
  const verdict = $("verdict");
  verdict.textContent = `${result.label} (${(100 * result.confidence).toFixed(1)}%)`;
  verdict.className = `verdict ${result.label}`;
  verdict.dataset.label = result.label;
  const probs = $("probs");
  probs.replaceChildren(...result.classes.map((c) => probabilityRow(c, result.probabilities[c])));
  $("details").textContent =
    `${name}: ${result.duration_s.toFixed(2)} s; the verdict is for the first ` +
    `${result.window_s.toFixed(2)} s (the model window); segments below cover the whole clip.`;
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = URL.createObjectURL(blob);
  $("player").src = playerUrl;
  $("result").hidden = false;
  drawSpectrogram($("spectrogram"), result.spectrogram);
  drawSegments($("segments"), result.segments, result.duration_s, result.classes);
}

function probabilityRow(label, p) {
  const row = document.createElement("div");
  row.className = "prob";
  const name = document.createElement("span");
  name.textContent = label;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${(100 * p).toFixed(1)}%`;
  bar.append(fill);
  const value = document.createElement("span");
  value.textContent = p.toFixed(3);
  row.append(name, bar, value);
  return row;
}

function colour(v) {              // v in [0, 1] -> [r, g, b]
  const x = Math.min(Math.max(v, 0), 1) * (COLORMAP.length - 1);
  const i = Math.min(Math.floor(x), COLORMAP.length - 2);
  const t = x - i;
  return COLORMAP[i].map((a, k) => Math.round(a + t * (COLORMAP[i + 1][k] - a)));
}

function drawSpectrogram(canvas, spec) {
  const bytes = Uint8Array.from(atob(spec.data), (ch) => ch.charCodeAt(0));
  canvas.width = spec.n_frames;
  canvas.height = spec.n_mels;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(spec.n_frames, spec.n_mels);
  for (let m = 0; m < spec.n_mels; m++) {        // row 0 of the data = lowest band
    const y = spec.n_mels - 1 - m;              // draw low frequencies at the bottom
    for (let t = 0; t < spec.n_frames; t++) {
      const [r, g, b] = colour(bytes[m * spec.n_frames + t] / 255);
      const o = 4 * (y * spec.n_frames + t);
      image.data[o] = r; image.data[o + 1] = g; image.data[o + 2] = b; image.data[o + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

function drawSegments(canvas, segments, duration, classes) {
  const width = Math.max(200, canvas.clientWidth || 800);
  canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const list = $("segment-list");
  list.replaceChildren();
  for (const s of segments) {
    const color = SEGMENT_COLORS[s.label] ||
      OTHER_COLORS[classes.indexOf(s.label) % OTHER_COLORS.length];
    ctx.fillStyle = color;
    const x0 = (s.start / duration) * width;
    ctx.fillRect(x0, 0, Math.max(1, (s.end / duration) * width - x0), canvas.height);
    const item = document.createElement("li");
    item.textContent =
      `${s.start.toFixed(2)}–${s.end.toFixed(2)} s: ${s.label} (score ${s.score.toFixed(3)})`;
    list.append(item);
  }
}

// ------------------------------------------------------------------ microphone
// The microphone as an audio graph source, or null (the reason shown) when there is none.
async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser cannot record here (the page must be served from localhost or HTTPS).");
    return null;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError(`Microphone unavailable: ${err.message}`);
    return null;
  }
  const context = new AudioContext();
  return { stream, context, source: context.createMediaStreamSource(stream) };
}

async function startRecording() {
  showError("");
  const mic = await openMicrophone();
  if (!mic) return;
  const { stream, context, source } = mic;
  const chunks = [];
  let node;
  if (context.audioWorklet) {
    await context.audioWorklet.addModule("/static/recorder-worklet.js");
    node = new AudioWorkletNode(context, "audiogate-tap");
    node.port.onmessage = (event) => chunks.push(event.data);
  } else {                                      // older browsers
    node = context.createScriptProcessor(4096, 1, 1);
    node.onaudioprocess = (event) => chunks.push(event.inputBuffer.getChannelData(0).slice());
  }
  source.connect(node);
  node.connect(context.destination);            // keeps the graph running; outputs silence
  const timer = setTimeout(stopRecording, MAX_RECORD_S * 1000);
  recorder = { context, stream, node, chunks, timer };
  $("record-btn").classList.add("recording");
  $("record-btn").disabled = true;
  $("stop-btn").disabled = false;
  setStatus(`Recording… (stops by itself after ${MAX_RECORD_S} s)`);
}

async function stopRecording() {
  if (!recorder) return;
  const { context, stream, node, chunks, timer } = recorder;
  recorder = null;
  clearTimeout(timer);
  node.disconnect();
  stream.getTracks().forEach((track) => track.stop());
  const sampleRate = context.sampleRate;
  await context.close();
  $("record-btn").classList.remove("recording");
  $("record-btn").disabled = false;
  $("stop-btn").disabled = true;
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const samples = new Float32Array(n);
  let offset = 0;
  for (const c of chunks) { samples.set(c, offset); offset += c.length; }
  await judge(encodeWav(samples, sampleRate), "recording.wav");
}

function encodeWav(samples, sampleRate) {       // mono 16-bit PCM WAV
  const buffer = new ArrayBuffer(44 + 2 * samples.length);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, sampleRate, true);
  view.setUint32(28, 2 * sampleRate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * samples.length, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// ------------------------------------------------------------------ live
// The microphone streamed to /listen as 32-bit float PCM at the AudioContext's rate; the
// token (if any) travels in the first message, never in the URL. Events come back as JSON.
const LIVE_TIMELINE_S = 20;       // seconds shown on the scrolling timeline
const LIVE_FRAME = 4096;          // samples per message (about 85 ms at 48 kHz)
const LIVE_EVENTS_SHOWN = 12;
const LIVE_CLOSE_REASONS = {
  4400: "bad start", 4401: "access token refused", 4408: "idle", 4409: "not reading",
  4429: "audio faster than real time", 1009: "frame too large", 1013: "busy: too many clients",
};
let live = null;                  // {socket, context, stream, node, rate, sent, events, ...}

async function startLive() {
  showError("");
  if (live) return;
  const mic = await openMicrophone();
  if (!mic) return;
  const { stream, context, source } = mic;
  await context.audioWorklet.addModule("/static/recorder-worklet.js");
  const node = new AudioWorkletNode(context, "audiogate-tap");
  live = { socket: null, context, stream, node, rate: context.sampleRate, sent: 0,
           pending: [], pendingLength: 0, events: [], threshold: null, ready: false, timer: null };
  node.port.onmessage = (event) => sendLive(event.data);
  source.connect(node);
  node.connect(context.destination);          // keeps the graph running; outputs silence
  $("live-btn").disabled = true;
  $("live-stop-btn").disabled = false;
  $("live-timeline").hidden = false;
  $("live-events").replaceChildren();
  $("live-status").dataset.state = "connecting";
  $("live-status").textContent = "Connecting…";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/listen`);
  live.socket = socket;
  socket.onopen = () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    socket.send(JSON.stringify({ rate: Math.round(context.sampleRate), format: "f32le",
                                 channels: 1, ...(token ? { token } : {}) }));
  };
  socket.onmessage = (message) => onLiveMessage(JSON.parse(message.data));
  socket.onclose = (event) => endLive(event.code, event.reason);
  live.timer = setInterval(drawTimeline, 200);
}

function sendLive(samples) {
  if (!live || !live.ready) return;           // audio before "ready" is not sent
  live.pending.push(samples);
  live.pendingLength += samples.length;
  if (live.pendingLength < LIVE_FRAME) return;
  const frame = new Float32Array(live.pendingLength);
  let offset = 0;
  for (const p of live.pending) { frame.set(p, offset); offset += p.length; }
  live.pending = [];
  live.pendingLength = 0;
  if (live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(frame.buffer);
    live.sent += frame.length;
  }
}

function onLiveMessage(message) {
  if (message.type === "ready") {
    live.ready = true;
    live.threshold = message.threshold;
    $("live-status").dataset.state = "listening";
    $("live-status").textContent =
      `Listening (${message.mode}; accepts ${message.positive} at score ≥ ${message.threshold.toFixed(3)})`;
    return;
  }
  if (message.type !== "event") return;
  live.events.push(message);
  if (live.events.length > 200) live.events.shift();
  const item = document.createElement("li");
  item.className = message.event;
  item.dataset.decision = message.event;
  item.dataset.start = message.start;
  item.dataset.end = message.end;
  item.textContent =
    `${message.start.toFixed(2)}–${message.end.toFixed(2)} s: ${message.event} ` +
    `(${message.label}, score ${message.score.toFixed(3)}, latency ${message.latency_ms.toFixed(0)} ms)`;
  const list = $("live-events");
  list.prepend(item);
  while (list.children.length > LIVE_EVENTS_SHOWN) list.lastChild.remove();
  drawTimeline();
}

function drawTimeline() {
  if (!live) return;
  const canvas = $("live-timeline");
  const width = Math.max(200, canvas.clientWidth || 800);
  canvas.width = width;
  const height = canvas.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const now = live.sent / live.rate;
  const left = now - LIVE_TIMELINE_S;
  const x = (t) => ((t - left) / LIVE_TIMELINE_S) * width;
  for (const e of live.events) {             // a bar per event: its span, its score as height
    if (e.end < left) continue;
    ctx.fillStyle = SEGMENT_COLORS[e.event === "allowed" ? "allowed" : "not_allowed"];
    const top = height * (1 - e.score);
    ctx.fillRect(x(e.start), top, Math.max(2, x(e.end) - x(e.start)), height - top);
  }
  if (live.threshold != null) {              // the threshold line
    const y = height * (1 - live.threshold);
    ctx.strokeStyle = "#444";
    ctx.setLineDash([6, 4]);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.fillStyle = "#666";
  ctx.font = "11px system-ui, sans-serif";
  for (let t = Math.ceil(left / 5) * 5; t <= now; t += 5) {
    if (t >= 0) ctx.fillText(`${t} s`, x(t) + 2, height - 3);
  }
}

function stopLive() {
  if (!live) return;
  $("live-stop-btn").disabled = true;
  if (live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(JSON.stringify({ type: "stop" }));   // the last utterance is decided
  }
  releaseLiveAudio();
}

function releaseLiveAudio() {
  if (!live || !live.stream) return;
  if (live.node) live.node.disconnect();
  live.stream.getTracks().forEach((track) => track.stop());
  live.context.close();
  live.stream = null;
}

function endLive(code, reason) {
  if (!live) return;
  releaseLiveAudio();
  clearInterval(live.timer);
  drawTimeline();
  live = null;
  $("live-btn").disabled = false;
  $("live-stop-btn").disabled = true;
  $("live-status").dataset.state = "stopped";
  $("live-status").textContent = code === 1000 ? "Stopped." : "";
  if (code === 4401) askForToken("The access token was not accepted; enter it again.");
  if (code !== 1000) {
    showError(`Live listening ended: ${reason || LIVE_CLOSE_REASONS[code] || "connection closed"} (${code})`);
  }
}

// A plain link cannot carry the access token: with one, fetch the report and open a copy.
async function openReport(event) {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  event.preventDefault();
  const response = await api("/report");
  if (!response.ok) return;
  const page = new Blob([await response.text()], { type: "text/html" });
  window.open(URL.createObjectURL(page), "_blank", "noopener");
}

// ------------------------------------------------------------------ wiring
function init() {
  takeTokenFromUrl();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    showError("");
    loadModelInfo();
  });
  loadModelInfo();
  $("report-link").addEventListener("click", openReport);
  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) judge(file, file.name);
    event.target.value = "";                    // choosing the same file again re-judges it
  });
  $("record-btn").addEventListener("click", startRecording);
  $("stop-btn").addEventListener("click", stopRecording);
  $("live-btn").addEventListener("click", startLive);
  $("live-stop-btn").addEventListener("click", stopLive);
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) judge(file, file.name);
  });
}

document.addEventListener("DOMContentLoaded", init);
