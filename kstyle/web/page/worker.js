// kstyle page worker: loads the ONNX Runtime Web runtime and the models, stylizes RGBA frames.
// Messages in:  {type: "load", manifest}, {type: "stylize", id, model, width, height, rgba,
//               strength, preserve}
// Messages out: {type: "ready", threads}, {type: "result", id, width, height, rgba, ms},
//               {type: "error", message} (one line)
import { finish, padEdge, rgbaToRgb } from "./pixels.js";

let ort = null;
let manifest = null;
const sessions = new Map();

function oneLine(error) {
  const text = String((error && error.message) || error || "unknown error");
  return text.split("\n").find((line) => line.trim()) || "unknown error";
}

async function load(message) {
  manifest = message.manifest;
  ort = await import(`./runtime/${manifest.runtime.entry}`);
  // Threads need cross-origin isolation (COOP/COEP): without it the runtime runs one thread.
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = message.threads || threads;
  ort.env.wasm.wasmPaths = new URL("./runtime/", import.meta.url).href;
  return ort.env.wasm.numThreads;
}

async function session(name) {
  if (!sessions.has(name)) {
    const model = manifest.models.find((entry) => entry.name === name);
    if (!model) throw new Error(`no model named ${name}`);
    const pending = (async () => {
      const response = await fetch(model.file);
      if (!response.ok) throw new Error(`${model.file}: HTTP ${response.status}`);
      const bytes = new Uint8Array(await response.arrayBuffer());
      try {
        return await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
      } catch (error) {
        throw new Error(`could not load model ${model.file}: ${oneLine(error)}`);
      }
    })();
    sessions.set(name, pending);
    pending.catch(() => sessions.delete(name));
  }
  return sessions.get(name);
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
    const input = new ort.Tensor("uint8", padded.rgb, [1, padded.height, padded.width, 3]);
    const outputs = await run.run({ [model.input.name]: input });
    const full = outputs[model.output.name].data;
    stylized = padded.width === width && padded.height === height
      ? full : padded.crop(full);
  }
  const rgba = finish(content, stylized, width, height, strength, preserve);
  return { type: "result", id: message.id, width, height, rgba, ms: performance.now() - started };
}

async function handle(message) {
  try {
    if (message.type === "load") {
      const threads = await load(message);
      if (message.warm) await session(message.warm);
      self.postMessage({ type: "ready", threads });
    } else if (message.type === "stylize") {
      const result = await stylize(message);
      self.postMessage(result, [result.rgba.buffer]);
    }
  } catch (error) {
    self.postMessage({ type: "error", id: message.id, message: oneLine(error) });
  }
}

// One message at a time, in order: a frame that arrives while another runs waits for it.
let queue = Promise.resolve();
self.onmessage = (event) => {
  queue = queue.then(() => handle(event.data));
};
