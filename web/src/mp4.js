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

// --- live fragments (the MSE live player): where the keyframes are ----------------------------
//
// Removing played video from a SourceBuffer also removes every frame that depends on what was
// removed, up to the next keyframe: cutting into a GOP would empty the buffer until the camera's
// next keyframe (seconds away with a long GOP). The live player therefore trims only up to a
// keyframe, and learns where they are from the fragments' boxes (ISO/IEC 14496-12 8.8).

const NON_SYNC = 0x10000; // sample_is_non_sync_sample

function u64(b, o) {
  return u32(b, o) * 2 ** 32 + u32(b, o + 4);
}
function i32(b, o) {
  return u32(b, o) | 0;
}

/** {timescale, defaultFlags} of the (single) video track of an init segment; null if absent. */
export function trackTimingOf(bytes) {
  let timescale = null;
  let defaultFlags = 0;
  const visit = (s, e) => walk(bytes, s, e, (t, bs, be) => {
    if (t === "moov" || t === "trak" || t === "mdia" || t === "mvex") return visit(bs, be);
    if (t === "mdhd" && be - bs >= 24) timescale = bytes[bs] === 1 ? u32(bytes, bs + 20) : u32(bytes, bs + 12);
    if (t === "trex" && be - bs >= 24) defaultFlags = u32(bytes, bs + 20);
    return null;
  });
  visit(0, bytes.length);
  return timescale ? { timescale, defaultFlags } : null;
}

/** Presentation times (in track ticks) of the keyframes in a media segment (moof + mdat …). */
export function keyframeTimes(bytes, defaultFlags = 0) {
  const out = [];
  walk(bytes, 0, bytes.length, (t, s, e) => {
    if (t !== "moof") return null;
    walk(bytes, s, e, (tt, ts, te) => {
      if (tt !== "traf") return null;
      let flags = defaultFlags;
      let decodeTime = 0;
      let defaultDuration = 0;
      walk(bytes, ts, te, (bt, bs, be) => {
        const f = u32(bytes, bs) & 0xffffff;
        if (bt === "tfhd") {
          let o = bs + 8;
          if (f & 0x01) o += 8;
          if (f & 0x02) o += 4;
          if (f & 0x08) defaultDuration = u32(bytes, o);
          if (f & 0x08) o += 4;
          if (f & 0x10) o += 4;
          if (f & 0x20 && o + 4 <= be) flags = u32(bytes, o);
        } else if (bt === "tfdt") {
          decodeTime = bytes[bs] === 1 ? u64(bytes, bs + 4) : u32(bytes, bs + 4);
        } else if (bt === "trun") {
          const count = u32(bytes, bs + 4);
          let o = bs + 8;
          if (f & 0x01) o += 4;
          const first = f & 0x04 ? u32(bytes, o) : null;
          if (f & 0x04) o += 4;
          let time = decodeTime;
          for (let i = 0; i < count && o <= be; i++) {
            const duration = f & 0x100 ? u32(bytes, o) : defaultDuration;
            if (f & 0x100) o += 4;
            if (f & 0x200) o += 4;
            let sampleFlags = f & 0x400 ? u32(bytes, o) : flags;
            if (f & 0x400) o += 4;
            if (i === 0 && first !== null) sampleFlags = first;
            const cto = f & 0x800 ? (bytes[bs] === 1 ? i32(bytes, o) : u32(bytes, o)) : 0;
            if (f & 0x800) o += 4;
            if (o > be) break;
            if (!(sampleFlags & NON_SYNC)) out.push(time + cto);
            time += duration;
          }
        }
        return null;
      });
      return null;
    });
    return null;
  });
  return out;
}
