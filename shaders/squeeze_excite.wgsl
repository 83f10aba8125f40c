// Squeeze-excite, the two memory-bound halves (the two small FCs run on matmul.wgsl).
//
// pool: column sums of x [B, P, C] over chunks of `chunk` pixels, times `scale`:
//   out[b, k, c] = scale * sum_{p in chunk k} x[b, p, c].
// Workgroup (x: channel block of 64, y: chunk, z: batch); 64 x 4 threads, so each step reads
// four whole 64-channel rows (coalesced) and each thread strides over every 4th pixel; the four
// lanes are then summed through workgroup memory. With one chunk this is the mean directly
// (scale = 1/P); for large P the host splits P over many workgroups (scale = 1/P) and runs this
// kernel again over the [B, chunks, C] partials (scale = 1) to add them up.
//
// scale_channels: out[b, p, c] = x[b, p, c] * s[b, c], one element per invocation.

@group(0) @binding(0) var<uniform> params: SqueezeExciteParams;
// Bindings follow the tensors each entry is given; POOL selects the pool's.
@group(0) @binding(1) var<storage, read> x: array<f32>;
#ifdef POOL
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#endif

const BLOCK: u32 = 64u;
const LANES: u32 = 4u;

#ifdef POOL
var<workgroup> partial: array<f32, 256>; // [LANES][BLOCK]

@compute @workgroup_size(64, 4)
fn pool(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * BLOCK + lid.x;
    let b = wid.z;
    let p0 = wid.y * params.chunk;
    let p1 = min(p0 + params.chunk, params.p);
    var acc = 0.0;
    if (c < params.c) {
        let base = b * params.p * params.c + c;
        for (var p = p0 + lid.y; p < p1; p += LANES) {
            acc += x[base + p * params.c];
        }
    }
    partial[lid.y * BLOCK + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && c < params.c) {
        let sum = partial[lid.x] + partial[BLOCK + lid.x] + partial[2u * BLOCK + lid.x] + partial[3u * BLOCK + lid.x];
        let chunks = (params.p + params.chunk - 1u) / params.chunk;
        out[(b * chunks + wid.y) * params.c + c] = sum * params.scale;
    }
}

#else
@compute @workgroup_size(256)
fn scale_channels(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    let per_batch = params.p * params.c;
    if (i < params.b * per_batch) {
        let b = i / per_batch;
        let c = i % params.c;
        out[i] = x[i] * s[b * params.c + c];
    }
}
#endif
