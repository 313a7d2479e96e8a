// Glass-to-glass latency in the browser, for tests and benchmarks only (never part of the app).
//
// The synthetic camera with `stamp=1` draws its capture wall-clock time (integer ms mod 2**40) into
// the top rows of each frame; camrec/sources/stamp.py describes the layout and has the Python
// reader this one mirrors: 48 blocks of side max(8, floor(floor(width / 48) / 8) * 8) in one row at
// the top left, white = 1, black = 0, read over each block's centre half against 128; blocks 0-3
// start marker 1,0,1,1, blocks 4-43 the time (most significant bit first), block 44 even parity,
// blocks 45-47 end marker 0,1,0. A wrong marker or parity means no stamp: never guess.
//
// Injected by the test with page.evaluate(<this file's text>); it defines window.camrecStamp:
//   read(video)          -> the stamp (ms) of the frame the <video> shows now, or null
//   sample(video, count) -> Promise of up to `count` {stamp, shownAt, latency} readings, one per
//                           presented frame (requestVideoFrameCallback), latency in ms.
(() => {
  const BLOCKS = 48;
  const START = [1, 0, 1, 1];
  const END = [0, 1, 0];
  const MODULUS = 2 ** 40;
  const canvas = document.createElement("canvas");
  const g = canvas.getContext("2d", { willReadFrequently: true });

  function blockSize(width) {
    return Math.max(8, Math.floor(Math.floor(width / BLOCKS) / 8) * 8);
  }

  function read(video) {
    const width = video.videoWidth;
    const side = blockSize(width);
    if (!width || BLOCKS * side > width || side > video.videoHeight) return null;
    canvas.width = BLOCKS * side;
    canvas.height = side;
    // The stamp row at its natural size: source rectangle = the top-left band of the frame.
    g.drawImage(video, 0, 0, BLOCKS * side, side, 0, 0, BLOCKS * side, side);
    const px = g.getImageData(0, 0, BLOCKS * side, side).data;
    const q = Math.floor(side / 4);
    const bits = [];
    for (let i = 0; i < BLOCKS; i++) {
      let sum = 0;
      let n = 0;
      for (let y = q; y < side - q; y++) {
        for (let x = i * side + q; x < (i + 1) * side - q; x++) {
          const o = (y * BLOCKS * side + x) * 4;
          sum += (px[o] + px[o + 1] + px[o + 2]) / 3;
          n++;
        }
      }
      bits.push(sum / n >= 128 ? 1 : 0);
    }
    if (START.some((b, i) => bits[i] !== b) || END.some((b, i) => bits[45 + i] !== b)) return null;
    const data = bits.slice(4, 44);
    if (data.reduce((a, b) => a + b, 0) % 2 !== bits[44]) return null;
    return data.reduce((v, b) => v * 2 + b, 0);
  }

  function sample(video, count) {
    return new Promise((resolve) => {
      const out = [];
      let frames = 0;
      const step = (_now, meta) => {
        // The wall-clock time this frame was (or will be) shown: performance's origin + its time.
        const shownAt = performance.timeOrigin + (meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : performance.now());
        const stamp = read(video);
        if (stamp !== null) {
          const latency = (((Math.round(shownAt) - stamp) % MODULUS) + MODULUS) % MODULUS;
          out.push({ stamp, shownAt, latency });
        }
        frames += 1;
        if (out.length >= count || frames >= count * 4) resolve(out);
        else video.requestVideoFrameCallback(step);
      };
      video.requestVideoFrameCallback(step);
    });
  }

  window.camrecStamp = { read, sample, blockSize };
})();
