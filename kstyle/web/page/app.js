// kstyle page: reads manifest.json, sends frames (a photo, or the webcam) to worker.js at the
// chosen resolution, and draws what comes back. The output canvas's data-frames attribute
// counts the frames drawn (data-first-ms: when the first was, in ms since navigation);
// body[data-state] is "loading", "ready" or "error" (data-ready-ms: when it became ready).
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
  ready: false, id: 0, generation: 0, frames: 0, times: [] };

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
  const pixels = context.getImageData(0, 0, size.width, size.height).data;
  state.inFlight += 1;
  state.worker.postMessage({ type: "stylize", id: ++state.id, generation: state.generation, model: $("style").value,
    width: size.width, height: size.height, rgba: pixels, strength: Number($("strength").value),
    preserve: $("preserve").checked }, [pixels.buffer]);
}

function schedule() {
  if (state.inFlight >= (state.webcam ? WEBCAM_IN_FLIGHT : 1)) state.pending = true;
  else send();
}

function showFps(ms) {
  const now = performance.now();
  state.times.push(now);
  while (state.times.length > 2 && now - state.times[0] > 2000) state.times.shift();
  const span = now - state.times[0];
  const fps = state.webcam && state.times.length > 1 ? (1000 * (state.times.length - 1)) / span : 1000 / ms;
  $("fps").textContent = `${fps.toFixed(1)} fps`;
  $("fps").title = `${ms.toFixed(0)} ms per frame`;
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
  state.frames += 1;
  canvas.dataset.frames = String(state.frames);
  if (state.frames === 1) canvas.dataset.firstMs = performance.now().toFixed(0);
  $("download").disabled = false;
  showFps(message.ms);
  if (state.webcam) requestAnimationFrame(schedule);
  else if (state.pending) {
    state.pending = false;
    send();
  }
}

async function usePhoto(file) {
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
  $("webcam").textContent = "Start webcam";
  $("webcam").setAttribute("aria-pressed", "false");
}

function download() {
  $("output").toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `kstyle-${$("style").value}.png`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }, "image/png");
}

function wire() {
  $("file").addEventListener("change", (event) => usePhoto(event.target.files[0]));
  $("webcam").addEventListener("click", () => (state.webcam ? stopWebcam() : startWebcam()));
  $("download").addEventListener("click", download);
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
    schedule();
  });
  for (const id of ["preserve", "resolution", "style"]) $(id).addEventListener("change", schedule);
  const drop = document.body;
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    $("drop").classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => $("drop").classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop").classList.remove("dragging");
    usePhoto(event.dataTransfer.files[0]);
  });
}

async function main() {
  document.body.dataset.state = "loading";
  wire();
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
  $("resolution").querySelector("option[value=native]").textContent = `native (up to ${maxSide()} px)`;
  for (const model of manifest.models) {
    const option = new Option(model.style ? `${model.name} (${model.style})` : model.name, model.name);
    $("style").add(option);
  }
  $("about").textContent = `${manifest.runtime.name} ${manifest.runtime.version} · kstyle ${manifest.kstyle_version}`;
  const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  state.worker = worker;
  worker.onerror = (event) => showError(`could not start the runtime: ${event.message || "worker failed"}`);
  worker.onmessage = (event) => {
    const message = event.data;
    if (message.type === "ready") {
      state.ready = true;
      clearError();
      document.body.dataset.readyMs = performance.now().toFixed(0);
      document.body.dataset.state = "ready";
      const threads = message.threads === 1 ? "1 thread" : `${message.threads} threads`;
      state.readyText = `Ready: ${manifest.runtime.name} ${manifest.runtime.version}, ${threads}`;
      $("status").textContent = state.readyText;
      if (state.source) schedule();
    } else if (message.type === "result") {
      onResult(message);
    } else if (message.type === "error") {
      state.inFlight = Math.max(0, state.inFlight - 1);
      if (message.generation !== undefined && message.generation !== state.generation) return;
      stopWebcam();
      showError(message.message);
    }
  };
  const threads = Number(new URLSearchParams(location.search).get("threads")) || 0;
  worker.postMessage({ type: "load", manifest, threads, warm: manifest.models[0].name });
}

main();
