// Pixel arithmetic shared by the page and its worker, the same rules as kstyle.inference:
// edge padding for images too small to mirror, colour preservation in full-range BT.601
// YCbCr (the content's Cb, Cr with the stylized luminance, clamped so the chroma is kept),
// then the strength blend (in float32, as numpy does), then rounding half to even to uint8.
// The model's output is uint8 (Python blends its float output), so a blended level can still
// differ from kstyle.stylize_array's by one.

export function rgbaToRgb(rgba, width, height) {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < width * height; i++, j += 4) {
    rgb[3 * i] = rgba[j];
    rgb[3 * i + 1] = rgba[j + 1];
    rgb[3 * i + 2] = rgba[j + 2];
  }
  return rgb;
}

// (H, W, 3) -> {rgb, width, height, crop(full)}: edge-padded at the bottom and right to
// multiples of `multiple` where the image is too small to reflect-pad (H <= pad or W <= pad),
// else unchanged (the model's graph reflect-pads itself).
export function padEdge(rgb, width, height, multiple) {
  const padH = (multiple - (height % multiple)) % multiple;
  const padW = (multiple - (width % multiple)) % multiple;
  if (height > padH && width > padW) return { rgb, width, height };
  const w = width + padW, h = height + padH;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(y, height - 1);
    for (let x = 0; x < w; x++) {
      const sx = Math.min(x, width - 1);
      for (let c = 0; c < 3; c++) out[3 * (y * w + x) + c] = rgb[3 * (sy * width + sx) + c];
    }
  }
  const crop = (full) => {
    const cropped = new Uint8Array(width * height * 3);
    for (let y = 0; y < height; y++) {
      cropped.set(full.subarray(3 * y * w, 3 * (y * w + width)), 3 * y * width);
    }
    return cropped;
  };
  return { rgb: out, width: w, height: h, crop };
}

const KR = 0.299, KG = 0.587, KB = 0.114;
// The exact inverse of kstyle.inference's RGB -> YCbCr matrix (rows: R, G, B from Cb, Cr).
const CB_TO = [
  -1.2188941886790896e-06, -0.34413567816533663, 1.7720000660738162,
];
const CR_TO = [
  1.4019995886573404, -0.7141361555818124, 4.0629806304661396e-07,
];

// Rounds half to even (numpy's np.round), then clamps to [0, 255].
export function toUint8(value) {
  const floor = Math.floor(value), rest = value - floor;
  const rounded = rest > 0.5 || (rest === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
  return Math.min(255, Math.max(0, rounded));
}

// content, stylized: (H, W, 3) uint8 RGB; returns (H, W, 4) RGBA uint8 (opaque).
export function finish(content, stylized, width, height, strength, preserve) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  const out = [0, 0, 0];
  // numpy's float32 blend: strength * stylized + (1 - strength) * content, each step float32
  const f = Math.fround, s = f(strength), t = f(1 - strength);
  const mix = (styled, plain) => toUint8(strength === 1 ? styled : f(f(s * f(styled)) + f(t * plain)));
  for (let i = 0; i < width * height; i++) {
    const r = content[3 * i], g = content[3 * i + 1], b = content[3 * i + 2];
    let sr = stylized[3 * i], sg = stylized[3 * i + 1], sb = stylized[3 * i + 2];
    if (preserve) {
      const cb = -0.168736 * r - 0.331264 * g + 0.5 * b;
      const cr = 0.5 * r - 0.418688 * g - 0.081312 * b;
      let low = -Infinity, high = Infinity;
      for (let c = 0; c < 3; c++) {
        out[c] = CB_TO[c] * cb + CR_TO[c] * cr; // the chroma's RGB at zero luminance
        low = Math.max(low, -out[c]);
        high = Math.min(high, 255 - out[c]);
      }
      const y = Math.min(Math.max(KR * sr + KG * sg + KB * sb, low), Math.max(low, high));
      sr = Math.min(255, Math.max(0, out[0] + y));
      sg = Math.min(255, Math.max(0, out[1] + y));
      sb = Math.min(255, Math.max(0, out[2] + y));
    }
    rgba[4 * i] = mix(sr, r);
    rgba[4 * i + 1] = mix(sg, g);
    rgba[4 * i + 2] = mix(sb, b);
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}
