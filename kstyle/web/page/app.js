// kstyle page: reads manifest.json, sends frames (a photo, or the webcam) to worker.js at the
// chosen resolution, and draws what comes back. On opening, the site's sample photo (if any)
// is stylized, so that a first picture shows before the user picks anything. The output
// canvas's data-frames attribute counts the frames drawn (data-first-ms: when the first was,
// in ms since navigation); body[data-state] is "loading", "ready" or "error" ("ready" once the
// runtime and first model are loaded and the sample's frame, if any, is drawn; data-ready-ms:
// when the runtime was ready, data-load: the worker's load phases in ms).
// ?threads=N in the URL overrides the runtime's thread count (benchmarks).
const $ = (id) => document.getElementById(id);
// With the webcam on, two frames are in flight, so that the worker starts the next frame
// while the page draws the last one; a photo has one.
const WEBCAM_IN_FLIGHT = 2;
// "native" resolution scales the longer side down to at most this (manifest.json's
// max_side): a 12-megapixel photo would run the wasm heap out of memory.
const DEFAULT_MAX_SIDE = 2048;
// generation: bumped whenever the source changes (a photo, the webcam started or stopped), so
// that frames still in flight from an earlier source are dropped, not drawn or counted.
const state = { manifest: null, source: null, webcam: null, inFlight: 0, pending: false,
  ready: false, id: 0, generation: 0, frames: 0, times: [], samplePending: false };
// The style picker's options: value -> {model (a manifest entry), index (the style of a net
// of several styles, or null)}.
const choices = new Map();
// The worker starts at once, so that its script loads while manifest.json is fetched.
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });

function showError(message) {
  const line = String(message).split("\n")[0];
  $("error").textContent = line;
  $("error").hidden = false;
  $("status").textContent = "Error";
  document.body.dataset.state = "error";
}

// Hides the error bar after a success (the runtime ready, a frame drawn).
function clearError() {
  if (document.body.dataset.state !== "error") return;
  $("error").hidden = true;
  $("error").textContent = "";
  document.body.dataset.state = state.ready ? "ready" : "loading";
  if (state.ready) $("status").textContent = state.readyText;
}

function maxSide() {
  return (state.manifest && state.manifest.max_side) || DEFAULT_MAX_SIDE;
}

function sourceSize() {
  const source = state.source;
  if (!source) return null;
  const width = source.videoWidth || source.width, height = source.videoHeight || source.height;
  return width && height ? { width, height } : null;
}

// The processing size: the source's, or scaled down so that its longer side is the chosen
// resolution (never up); "native" is capped at maxSide().
function processingSize() {
  const size = sourceSize();
  if (!size) return null;
  const choice = $("resolution").value;
  const side = choice === "native" ? maxSide() : Number(choice);
  const scale = Math.min(1, side / Math.max(size.width, size.height));
  return { width: Math.max(1, Math.round(size.width * scale)),
    height: Math.max(1, Math.round(size.height * scale)) };
}

function choice() {
  return choices.get($("style").value) || null;
}

// The styles of the chosen net when it holds several (manifest "style_input"), else null.
function chosenStyles(picked = choice()) {
  return picked && picked.index !== null ? picked.model.style_input.styles : null;
}

// The chosen style's weights, as kstyle.stylize_array takes them (null for a net of one
// style): the picked style alone, or (1 - mix) of it and mix of the "Mix with" style.
function styleVector() {
  const picked = choice(), styles = chosenStyles(picked);
  if (!styles) return null;
  const vector = new Array(styles.length).fill(0);
  const other = $("mix").value === "" ? null : Number($("mix").value);
  const amount = other === null || other === picked.index ? 0 : Number($("mix-amount").value);
  vector[picked.index] += 1 - amount;
  if (amount > 0) vector[other] += amount;
  return vector;
}

// What the output shows, in words: the model, its style, and the mix.
function choiceLabel() {
  const picked = choice(), styles = chosenStyles(picked);
  if (!picked) return "";
  if (!styles) return picked.model.name;
  const label = `${picked.model.name}: ${styles[picked.index].name}`;
  const other = $("mix").value, amount = Number($("mix-amount").value);
  return other === "" || amount === 0 ? label : `${label} + ${styles[Number(other)].name} ${amount.toFixed(2)}`;
}

function send() {
  const size = processingSize();
  if (!size || !state.ready) return;
  const canvas = $("input");
  if (canvas.width !== size.width || canvas.height !== size.height) {
    canvas.width = size.width;
    canvas.height = size.height;
  }
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const source = sourceSize();
  context.imageSmoothingEnabled = source.width !== size.width || source.height !== size.height;
  context.imageSmoothingQuality = "high";
  context.drawImage(state.source, 0, 0, size.width, size.height);
  $("drop").dataset.empty = "false";
  const pixels = context.getImageData(0, 0, size.width, size.height).data;
  state.inFlight += 1;
  worker.postMessage({ type: "stylize", id: ++state.id, generation: state.generation,
    model: choice().model.name, style: styleVector(), width: size.width, height: size.height,
    rgba: pixels, strength: Number($("strength").value), preserve: $("preserve").checked },
  [pixels.buffer]);
}

function schedule() {
  if (state.inFlight >= (state.webcam ? WEBCAM_IN_FLIGHT : 1)) state.pending = true;
  else send();
}

// fps while the webcam runs (frames drawn over the last 2 s); a photo shows its time instead.
function showSpeed(ms) {
  $("output-style").textContent = `${choiceLabel()} · ${ms.toFixed(0)} ms`;
  if (!state.webcam) return;
  const now = performance.now();
  state.times.push(now);
  while (state.times.length > 2 && now - state.times[0] > 2000) state.times.shift();
  if (state.times.length < 2) return;
  const fps = (1000 * (state.times.length - 1)) / (now - state.times[0]);
  $("fps").textContent = `${fps.toFixed(1)} fps`;
  $("fps").title = `${ms.toFixed(0)} ms per frame`;
  $("fps").hidden = false;
}

// The page is ready once the runtime is, and the sample photo's frame (if any) is drawn.
function markReady() {
  if (document.body.dataset.state === "error") return;
  document.body.dataset.state = "ready";
  $("status").textContent = state.readyText;
}

function onResult(message) {
  state.inFlight = Math.max(0, state.inFlight - 1);
  if (message.generation !== state.generation) { // from a source no longer shown
    if (state.webcam) requestAnimationFrame(schedule);
    else if (state.pending) {
      state.pending = false;
      send();
    }
    return;
  }
  clearError();
  const canvas = $("output");
  canvas.width = message.width;
  canvas.height = message.height;
  canvas.getContext("2d").putImageData(new ImageData(message.rgba, message.width, message.height), 0, 0);
  canvas.parentElement.dataset.empty = "false";
  state.frames += 1;
  canvas.dataset.frames = String(state.frames);
  if (state.frames === 1) {
    canvas.dataset.firstMs = performance.now().toFixed(0);
    state.samplePending = false;
    markReady();
  }
  $("download").disabled = false;
  showSpeed(message.ms);
  if (state.webcam) requestAnimationFrame(schedule);
  else if (state.pending) {
    state.pending = false;
    send();
  }
}

async function usePhoto(file) {
  $("file").value = ""; // read or refused, the input keeps no file's name (and takes it again)
  if (!file) return;
  stopWebcam();
  state.generation += 1;
  try {
    state.source = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (error) {
    showError(`could not read ${file.name}: not an image`);
    return;
  }
  state.times = [];
  schedule();
}

// The site's sample photo (manifest.json's "sample"), stylized on opening unless the user
// picked something first; the page says "ready" after its frame (state.samplePending).
async function loadSample(manifest) {
  try {
    const response = await fetch(manifest.sample);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const bitmap = await createImageBitmap(await response.blob(),
      { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    if (!state.source && !state.webcam) {
      state.source = bitmap;
      schedule();
      return;
    }
  } catch (error) {
    // a page without its sample still works
  }
  state.samplePending = false;
  if (state.ready) markReady();
}

async function startWebcam() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    const video = $("video");
    video.srcObject = stream;
    await video.play();
    state.webcam = stream;
    state.source = video;
    state.generation += 1;
    state.times = [];
    $("fps").textContent = "– fps";
    $("fps").hidden = false;
    $("webcam").textContent = "Stop webcam";
    $("webcam").setAttribute("aria-pressed", "true");
    for (let i = 0; i < WEBCAM_IN_FLIGHT; i++) schedule();
  } catch (error) {
    showError(`could not start the webcam: ${error.message || error}`);
  }
}

function stopWebcam() {
  if (!state.webcam) return;
  state.webcam.getTracks().forEach((track) => track.stop());
  state.webcam = null;
  if (state.source === $("video")) state.source = null;
  $("video").srcObject = null;
  state.generation += 1;
  $("fps").hidden = true;
  $("webcam").textContent = "Start webcam";
  $("webcam").setAttribute("aria-pressed", "false");
}

function download() {
  $("output").toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `kstyle-${choiceLabel().replace(/[^A-Za-z0-9._-]+/g, "-")}.png`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }, "image/png");
}

function showThumbnail(thumb, url, name) {
  thumb.hidden = !url;
  if (url) {
    thumb.src = url;
    thumb.alt = `style: ${name}`;
  }
}

// The chosen style's picture, and for a net of several styles the "Mix with" list: its other
// styles (the mix kept where the net is the same and the style is still another one).
function showStyle() {
  const picked = choice(), styles = chosenStyles(picked);
  if (!styles) {
    const model = picked && picked.model;
    showThumbnail($("style-thumb"), model && model.thumbnail, model && (model.style || model.name));
  } else {
    showThumbnail($("style-thumb"), styles[picked.index].thumbnail, styles[picked.index].name);
  }
  $("mix-field").hidden = !styles;
  const mix = $("mix");
  if (!styles) {
    mix.dataset.model = ""; // a net of several picked again later starts without a mix
    return;
  }
  const kept = mix.dataset.model === picked.model.name ? mix.value : "";
  mix.dataset.model = picked.model.name;
  mix.replaceChildren(new Option("none", ""));
  styles.forEach((style, index) => {
    if (index !== picked.index) mix.add(new Option(style.name, String(index)));
  });
  mix.value = kept !== String(picked.index) ? kept : "";
  showMix();
}

function showMix() {
  const styles = chosenStyles(), other = $("mix").value;
  $("mix-amount").disabled = other === "";
  showThumbnail($("mix-thumb"), other === "" ? null : styles[Number(other)].thumbnail,
    other === "" ? "" : styles[Number(other)].name);
}

function wire() {
  $("file").addEventListener("change", (event) => usePhoto(event.target.files[0]));
  $("drop").addEventListener("click", () => $("file").click());
  $("webcam").addEventListener("click", () => (state.webcam ? stopWebcam() : startWebcam()));
  $("download").addEventListener("click", download);
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
    schedule();
  });
  for (const id of ["preserve", "resolution"]) $(id).addEventListener("change", schedule);
  // the style's controls are updated before the frame is sent: it reads them
  $("style").addEventListener("change", () => {
    showStyle();
    schedule();
  });
  $("mix").addEventListener("change", () => {
    showMix();
    schedule();
  });
  $("mix-amount").addEventListener("input", () => {
    $("mix-value").textContent = Number($("mix-amount").value).toFixed(2);
    schedule();
  });
  // a photo dropped anywhere on the page is taken; the drop zone lights up meanwhile
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    $("drop").classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) $("drop").classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop").classList.remove("dragging");
    usePhoto(event.dataTransfer.files[0]);
  });
}

function onWorkerMessage(event) {
  const message = event.data;
  if (message.type === "ready") {
    state.ready = true;
    clearError();
    document.body.dataset.readyMs = performance.now().toFixed(0);
    document.body.dataset.load = JSON.stringify(message.phases);
    const threads = message.threads === 1 ? "1 thread" : `${message.threads} threads`;
    const runtime = state.manifest.runtime;
    state.readyText = `Ready: ${runtime.name} ${runtime.version}, ${threads}`;
    if (state.source) schedule();
    if (!state.samplePending || state.frames > 0) markReady();
    else $("status").textContent = "Stylizing the sample…";
  } else if (message.type === "result") {
    onResult(message);
  } else if (message.type === "error") {
    state.inFlight = Math.max(0, state.inFlight - 1);
    if (message.generation !== undefined && message.generation !== state.generation) return;
    stopWebcam();
    showError(message.message);
  }
}

async function main() {
  document.body.dataset.state = "loading";
  wire();
  worker.onerror = (event) => showError(`could not start the runtime: ${event.message || "worker failed"}`);
  worker.onmessage = onWorkerMessage;
  let manifest;
  try {
    const response = await fetch("manifest.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    manifest = await response.json();
  } catch (error) {
    showError(`could not load manifest.json: ${error.message || error}`);
    return;
  }
  state.manifest = manifest;
  const threads = Number(new URLSearchParams(location.search).get("threads")) || 0;
  worker.postMessage({ type: "load", manifest, threads, warm: manifest.models[0].name });
  if (manifest.sample) {
    state.samplePending = true;
    loadSample(manifest);
  }
  $("resolution").querySelector("option[value=native]").textContent = `native (up to ${maxSide()} px)`;
  for (const model of manifest.models) {
    const styles = model.style_input ? model.style_input.styles : null;
    if (!styles) {
      choices.set(model.name, { model, index: null });
      $("style").add(new Option(model.style ? `${model.name} (${model.style})` : model.name, model.name));
      continue;
    }
    styles.forEach((style, index) => { // one option per style of a net of several
      const value = `${model.name}/${index}`; // a run folder's name never holds a "/"
      choices.set(value, { model, index });
      $("style").add(new Option(`${model.name}: ${style.name}`, value));
    });
  }
  showStyle();
  $("about").textContent = `${manifest.runtime.name} ${manifest.runtime.version} · kstyle ${manifest.kstyle_version}`;
}

main();
