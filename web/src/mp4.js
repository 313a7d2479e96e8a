// Just enough ISO-BMFF parsing to build the MSE codec string of a camrec clip.
//
// Clips are fragmented MP4 written with `empty_moov`: ftyp + moov come first and hold the avcC
// box (H.264 decoder configuration). Its bytes 1..3 are profile, constraint flags and level,
// which make the RFC 6381 string "avc1.PPCCLL" that MediaSource.isTypeSupported needs.

const CONTAINERS = new Set(["moov", "trak", "mdia", "minf", "stbl"]);

function u32(b, o) {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
function type(b, o) {
  return String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3]);
}
const hex = (v) => v.toString(16).padStart(2, "0");

// Visits the boxes in b[start, end); returns the first non-null result of fn.
function walk(b, start, end, fn) {
  let o = start;
  while (o + 8 <= end) {
    let size = u32(b, o);
    const t = type(b, o + 4);
    let header = 8;
    if (size === 1) return null; // 64-bit sizes never occur in an init segment
    if (size === 0) size = end - o;
    if (size < header || o + size > end) return null;
    const r = fn(t, o + header, o + size);
    if (r !== null && r !== undefined) return r;
    o += size;
  }
  return null;
}

function findAvcC(b, start, end) {
  return walk(b, start, end, (t, s, e) => {
    if (CONTAINERS.has(t)) return findAvcC(b, s, e);
    if (t === "stsd") return findAvcC(b, s + 8, e); // version/flags + entry count
    if (t === "avc1" || t === "avc3") return findAvcC(b, s + 78, e); // VisualSampleEntry fields
    if (t === "avcC") return { start: s, end: e, entry: null };
    if (t === "hvc1" || t === "hev1") return { hevc: t };
    return null;
  });
}

/** Whether `bytes` hold a complete ftyp + moov (the init segment). */
export function initSegmentLength(bytes) {
  let moovEnd = -1;
  walk(bytes, 0, bytes.length, (t, s, e) => {
    if (t === "moov") moovEnd = e;
    return moovEnd >= 0 ? true : null;
  });
  return moovEnd;
}

/** The MSE type for the clip whose first bytes are `bytes`, e.g. 'video/mp4; codecs="avc1.4d401e"'. */
export function mimeTypeOf(bytes) {
  const end = initSegmentLength(bytes);
  if (end < 0) throw new Error("the clip does not start with an MP4 header");
  const found = findAvcC(bytes, 0, end);
  if (!found) throw new Error("the clip has no H.264 track");
  if (found.hevc) return `video/mp4; codecs="${found.hevc}"`;
  const s = found.start;
  return `video/mp4; codecs="avc1.${hex(bytes[s + 1])}${hex(bytes[s + 2])}${hex(bytes[s + 3])}"`;
}
