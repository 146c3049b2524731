// audiogate web page: upload a file or record the microphone, show verdict and spectrogram.
// Plain JS, no dependencies; talks only to this server (GET /model, POST /predict).
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

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

async function loadModelInfo() {
  try {
    const response = await fetch("/model");
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
    response = await fetch("/predict", { method: "POST", body: form });
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
async function startRecording() {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser cannot record here (the page must be served from localhost or HTTPS).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError(`Microphone unavailable: ${err.message}`);
    return;
  }
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
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

// ------------------------------------------------------------------ wiring
function init() {
  loadModelInfo();
  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) judge(file, file.name);
    event.target.value = "";                    // choosing the same file again re-judges it
  });
  $("record-btn").addEventListener("click", startRecording);
  $("stop-btn").addEventListener("click", stopRecording);
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
