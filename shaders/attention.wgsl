// Multi-head scaled dot-product attention over packed q|k|v rows:
//   qkv [B, S, 3D] -> out [B, S, D], head h on columns h*dh..(h+1)*dh of each of q, k, v.
//
// One 64-thread workgroup per (batch, head, query row). Threads split the keys for the scores
// (the query row is staged through workgroup memory in chunks of 512, so any dh fits the
// budget), the workgroup takes a max-subtracted softmax, then threads split the dh output
// columns, reading v coalesced. Workgroup memory: 4.3 KB. Defines: MASK binds key_mask [B, S]
// (u32, 0 = padding): padded keys get probability exactly 0; a row with no real key gives 0s.

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
#ifdef MASK
@group(0) @binding(2) var<storage, read> key_mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
#endif

const WG: u32 = 64u;
const MAX_SEQ: u32 = 512u;
const Q_CHUNK: u32 = 512u;

var<workgroup> scores: array<f32, MAX_SEQ>;
var<workgroup> q_chunk: array<f32, Q_CHUNK>;
var<workgroup> partial: array<f32, WG>;

fn is_real_key(b: u32, j: u32) -> bool {
#ifdef MASK
    return key_mask[b * params.seq + j] != 0u;
#else
    return true;
#endif
}

#include workgroup_reduce

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let seq = params.seq;
    if (g >= params.batch * params.heads * seq) {
        return;
    }
    let i = g % seq;
    let h = (g / seq) % params.heads;
    let b = g / (seq * params.heads);
    let d = params.d;
    let dh = params.dh;
    let stride = 3u * d;
    let first = b * seq; // token index of (b, 0)
    let q_base = (first + i) * stride + h * dh;
    let k_col = d + h * dh;
    let v_col = 2u * d + h * dh;

    // Each thread owns keys j = tid, tid + WG, ...: only it touches scores[j] until the softmax.
    for (var j = tid; j < seq; j += WG) {
        scores[j] = 0.0;
    }
    for (var c0 = 0u; c0 < dh; c0 += Q_CHUNK) {
        let n = min(Q_CHUNK, dh - c0);
        for (var c = tid; c < n; c += WG) {
            q_chunk[c] = qkv[q_base + c0 + c];
        }
        workgroupBarrier();
        for (var j = tid; j < seq; j += WG) {
            let k_base = (first + j) * stride + k_col + c0;
            var acc = 0.0;
            for (var c = 0u; c < n; c++) {
                acc = fma(q_chunk[c], qkv[k_base + c], acc);
            }
            scores[j] += acc;
        }
        // q_chunk is overwritten by the next chunk only after every thread is done with it.
        workgroupBarrier();
    }

    var m = -3.0e38;
    for (var j = tid; j < seq; j += WG) {
        if (is_real_key(b, j)) {
            scores[j] *= params.scale;
            m = max(m, scores[j]);
        }
    }
    let mx = workgroup_reduce(tid, m, true);
    var s = 0.0;
    for (var j = tid; j < seq; j += WG) {
        var p = 0.0;
        if (is_real_key(b, j)) {
            p = exp(scores[j] - mx);
        }
        scores[j] = p;
        s += p;
    }
    // The reduction's barriers also publish every thread's probabilities in `scores`.
    let total = workgroup_reduce(tid, s, false);
    // total >= 1 when any key is real (the max contributes exp(0)); 0 means all are padding.
    let inv = select(0.0, 1.0 / total, total > 0.0);

    let out_base = (first + i) * d + h * dh;
    for (var c = tid; c < dh; c += WG) {
        var acc = 0.0;
        for (var j = 0u; j < seq; j++) {
            acc = fma(scores[j], qkv[(first + j) * stride + v_col + c], acc);
        }
        out[out_base + c] = acc * inv;
    }
}
