// kstyle page worker: loads the ONNX Runtime Web runtime and the models, stylizes RGBA frames.
// Messages in:  {type: "load", manifest}, {type: "stylize", id, generation, model, style
//               (a net of several styles: each style's weight; else null), width, height,
//               rgba, strength, preserve}
// Messages out: {type: "ready", threads (what the runtime runs), phases (load times in ms)},
//               {type: "result", id, generation, width, height, rgba, ms},
//               {type: "error", id, generation, message}
import { finish, padEdge, rgbaToRgb } from "./pixels.js";

let ort = null;
let manifest = null;
const sessions = new Map();

function oneLine(error) {
  const text = String((error && error.message) || error || "unknown error");
  return text.split("\n").find((line) => line.trim()) || "unknown error";
}

// Loads the runtime and the first model at once: the runtime's module, its wasm binary and
// the model file are fetched in parallel (the runtime would otherwise fetch its wasm only
// when the first session is created, after the model). Returns the phases' times in ms.
async function load(message) {
  const started = performance.now();
  manifest = message.manifest;
  const runtime = new URL("./runtime/", import.meta.url).href;
  const wasm = fetch(`${runtime}${manifest.runtime.wasm || "ort-wasm-simd-threaded.wasm"}`)
    .then((response) => {
      if (!response.ok) throw new Error(`the runtime's wasm: HTTP ${response.status}`);
      return response.arrayBuffer();
    });
  const model = message.warm ? modelBytes(message.warm) : null;
  wasm.catch(() => {}); // both awaited below; a failure is reported there, once
  model?.catch(() => {});
  ort = await import(`./runtime/${manifest.runtime.entry}`);
  // Threads need cross-origin isolation (COOP/COEP): without it the runtime runs one thread.
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  // Without isolation the runtime falls back to one thread, whatever was asked (?threads=N).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? message.threads || threads : 1;
  ort.env.wasm.wasmPaths = runtime;
  ort.env.wasm.wasmBinary = await wasm;
  const fetched = performance.now();
  if (message.warm) await session(message.warm, model);
  return { fetch: fetched - started, session: performance.now() - fetched };
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// The bytes of the model named ``name``, checked against manifest.json's sha256.
async function modelBytes(name) {
  const model = manifest.models.find((entry) => entry.name === name);
  if (!model) throw new Error(`no model named ${name}`);
  const response = await fetch(model.file);
  if (!response.ok) throw new Error(`${model.file}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (model.sha256 && (await sha256Hex(bytes)) !== model.sha256) {
    throw new Error(`${model.file} does not match manifest.json (sha256); rebuild the page`);
  }
  return bytes;
}

// The session of the model ``name`` (created once); ``bytes``: its file's bytes if already
// being fetched (a promise).
async function session(name, bytes = null) {
  if (!sessions.has(name)) {
    const model = manifest.models.find((entry) => entry.name === name);
    if (!model) throw new Error(`no model named ${name}`);
    const pending = (async () => {
      const file = await (bytes || modelBytes(name));
      try {
        return await ort.InferenceSession.create(file, { executionProviders: ["wasm"] });
      } catch (error) {
        throw new Error(`could not load model ${model.file}: ${oneLine(error)}`);
      }
    })();
    sessions.set(name, pending);
    pending.catch(() => sessions.delete(name));
  }
  return sessions.get(name);
}

// A net of several styles' second input: the style weights as float32 [1, N].
function styleTensor(model, style) {
  const count = model.style_input.styles.length;
  if (!Array.isArray(style) || style.length !== count) {
    throw new Error(`model ${model.name} takes ${count} style weights`);
  }
  return new ort.Tensor("float32", Float32Array.from(style), [1, count]);
}

async function stylize(message) {
  const { width, height, strength, preserve } = message;
  const content = rgbaToRgb(message.rgba, width, height);
  const started = performance.now();
  let stylized = content;
  if (strength > 0) {
    const model = manifest.models.find((entry) => entry.name === message.model);
    const run = await session(message.model);
    // The graph reflect-pads to its size multiple itself; an image too small to mirror is
    // edge-padded here first, as kstyle.stylize_array does, and cropped back below.
    const padded = padEdge(content, width, height, model.input.size_multiple);
    const feeds = { [model.input.name]: new ort.Tensor("uint8", padded.rgb, [1, padded.height, padded.width, 3]) };
    if (model.style_input) feeds[model.style_input.name] = styleTensor(model, message.style);
    let outputs;
    try {
      outputs = await run.run(feeds);
    } catch (error) {
      if (/bad_alloc|out of memory|memory/i.test(oneLine(error))) {
        throw new Error(`out of memory at ${width}x${height}: pick a lower resolution`);
      }
      throw error;
    }
    const full = outputs[model.output.name].data;
    stylized = padded.width === width && padded.height === height
      ? full : padded.crop(full);
  }
  const rgba = finish(content, stylized, width, height, strength, preserve);
  return { type: "result", id: message.id, generation: message.generation, width, height, rgba, ms: performance.now() - started };
}

async function handle(message) {
  try {
    if (message.type === "load") {
      const phases = await load(message);
      // read back after the first session: the runtime lowers it where threads cannot run
      self.postMessage({ type: "ready", threads: ort.env.wasm.numThreads, phases });
    } else if (message.type === "stylize") {
      const result = await stylize(message);
      self.postMessage(result, [result.rgba.buffer]);
    }
  } catch (error) {
    self.postMessage({ type: "error", id: message.id, generation: message.generation,
      message: oneLine(error) });
  }
}

// One message at a time, in order: a frame that arrives while another runs waits for it.
let queue = Promise.resolve();
self.onmessage = (event) => {
  queue = queue.then(() => handle(event.data));
};
