// Synthetic photo records for the scale test and the benchmark: deterministic int8 rows with a
// per-photo scale, made the same way in Node (the reference ranking) and in the page (through the
// test hook), so both sides hold the same vectors without sending 40 MB through the driver.

// Row `i` of width `dim` for `seed`: a unit vector drawn from a seeded PRNG (mulberry32, sums of
// uniforms for a rough normal), quantised to int8 with one scale, as brivl stores embeddings.
// Self-contained: its source is sent to the page as is.
export function synthRow(i, dim, seed) {
  let a = (Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(seed + 1, 0x85ebca6b)) >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const v = new Float64Array(dim);
  let norm = 0;
  for (let j = 0; j < dim; j++) {
    v[j] = rand() + rand() + rand() - 1.5;
    norm += v[j] * v[j];
  }
  norm = Math.sqrt(norm);
  let max = 0;
  for (let j = 0; j < dim; j++) {
    v[j] /= norm;
    max = Math.max(max, Math.abs(v[j]));
  }
  const code = new Int8Array(dim);
  for (let j = 0; j < dim; j++) code[j] = Math.round((v[j] * 127) / max);
  return { code, scale: max / 127 };
}

// A query vector (f32, unit length) for `seed`: a row's direction plus noise, so that it has
// clear nearest neighbours like a real query.
export function synthQuery(dim, seed, near) {
  const base = synthRow(near, dim, seed);
  const noise = synthRow(near + 7919, dim, seed + 1);
  const q = new Float32Array(dim);
  let n = 0;
  for (let j = 0; j < dim; j++) {
    q[j] = base.code[j] * base.scale + 0.8 * noise.code[j] * noise.scale;
    n += q[j] * q[j];
  }
  n = Math.sqrt(n);
  for (let j = 0; j < dim; j++) q[j] /= n;
  return q;
}

// Rows 0..n as one matrix: {codes: Int8Array(n * dim), scales: Float64Array(n)}.
export function synthRows(n, dim, seed) {
  const codes = new Int8Array(n * dim);
  const scales = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = synthRow(i, dim, seed);
    codes.set(r.code, i * dim);
    scales[i] = r.scale;
  }
  return { codes, scales };
}

// As app/web/js/store.js names them: 64 hex digits, like a real SHA-256.
export const synthHash = (i) => i.toString(16).padStart(64, "0");

// The exact top `k` of `rows` for query `q`: score = scale * sum(q * code), in f64; ties to the
// lower row.
export function exactTop(q, rows, dim, k) {
  const n = rows.scales.length;
  const scores = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const off = i * dim;
    for (let j = 0; j < dim; j++) s += q[j] * rows.codes[off + j];
    scores[i] = s * rows.scales[i];
  }
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, k).map((i) => ({ hash: synthHash(i), score: scores[i] }));
}
