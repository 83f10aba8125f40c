// Multi-head scaled dot-product attention over packed q|k|v rows:
//   qkv [B, S, 3D] -> out [B, S, D], head h on columns h*dh..(h+1)*dh of each of q, k, v.
//
// One workgroup of WG = 64 threads (8 with NARROW, on CPU adapters: attention.rs) per (batch,
// head, block of QB = 4 query rows), so K and V are read once per four queries, not once per
// query. Scores: thread t owns keys t, t + WG, ..., and for each block of WG keys K passes
// through workgroup memory in tiles of WG keys x 16 columns (loaded coalesced, padded to 17
// columns against bank conflicts) while the four query rows' 16 columns are broadcast from a
// second tile; the four dot products of a key sit in one vec4. The four softmaxes share
// max-subtracted vec4 reductions; then thread t owns output columns t, t + WG, ..., reading V
// coalesced straight into registers (each value serves all four rows). Workgroup memory: 13.5 KB
// (8.9 KB with NARROW). Defines: MASK binds key_mask [B, S] (u32, 0 = padding): padded keys get
// probability exactly 0; a row with no real key gives 0s.

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
#ifdef MASK
@group(0) @binding(2) var<storage, read> key_mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
#endif

#ifdef NARROW
const WG: u32 = 8u;
#else
const WG: u32 = 64u;
#endif
const QB: u32 = 4u;
const MAX_SEQ: u32 = 512u;
const CK: u32 = 16u;
const KP: u32 = 17u; // padded row of the K tile

// scores[j][r]: query row r of the block against key j; probabilities after the softmax.
var<workgroup> scores: array<vec4<f32>, MAX_SEQ>;
var<workgroup> k_tile: array<f32, WG * KP>; // [WG][KP]
var<workgroup> q_tile: array<vec4<f32>, CK>; // [CK] of the four rows
// The four rows' softmax sums and maxima are reduced together.
alias ReduceT = vec4<f32>;
var<workgroup> partial: array<ReduceT, WG>;

fn is_real_key(b: u32, j: u32) -> bool {
#ifdef MASK
    return key_mask[b * params.seq + j] != 0u;
#else
    return true;
#endif
}

#include workgroup_reduce

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let seq = params.seq;
    let blocks = (seq + QB - 1u) / QB;
    if (g >= params.batch * params.heads * blocks) {
        return;
    }
    let i0 = (g % blocks) * QB;
    let h = (g / blocks) % params.heads;
    let b = g / (blocks * params.heads);
    let d = params.d;
    let dh = params.dh;
    let stride = 3u * d;
    let first = b * seq; // token index of (b, 0)
    let k_col = d + h * dh;
    let v_col = 2u * d + h * dh;

    for (var j0 = 0u; j0 < seq; j0 += WG) {
        var acc = vec4<f32>();
        for (var c0 = 0u; c0 < dh; c0 += CK) {
            // Query r's column c (zero past the row or the sequence)...
            for (var e = tid; e < QB * CK; e += WG) {
                let r = e / CK;
                let c = e % CK;
                var v = 0.0;
                if (i0 + r < seq && c0 + c < dh) {
                    v = qkv[(first + i0 + r) * stride + h * dh + c0 + c];
                }
                q_tile[c][r] = v;
            }
            // ...and keys j0.. j0 + 63's columns c0.. c0 + 15, 16 consecutive floats per key.
            for (var e = tid; e < WG * CK; e += WG) {
                let jj = e / CK;
                let c = e % CK;
                var v = 0.0;
                if (j0 + jj < seq && c0 + c < dh) {
                    v = qkv[(first + j0 + jj) * stride + k_col + c0 + c];
                }
                k_tile[jj * KP + c] = v;
            }
            workgroupBarrier();
            for (var c = 0u; c < CK; c++) {
                acc = fma(q_tile[c], vec4<f32>(k_tile[tid * KP + c]), acc);
            }
            // The tiles are overwritten only after every thread is done with them.
            workgroupBarrier();
        }
        if (j0 + tid < seq) {
            scores[j0 + tid] = acc * params.scale;
        }
    }

    // Softmax of each of the four rows; a thread reads and writes only its own keys' scores
    // until the reductions' barriers publish them.
    var m = vec4<f32>(-3.0e38);
    for (var j = tid; j < seq; j += WG) {
        if (is_real_key(b, j)) {
            m = max(m, scores[j]);
        }
    }
    let mx = workgroup_reduce(tid, m, true);
    var s = vec4<f32>();
    for (var j = tid; j < seq; j += WG) {
        var p = vec4<f32>();
        if (is_real_key(b, j)) {
            p = exp(scores[j] - mx);
        }
        scores[j] = p;
        s += p;
    }
    let total = workgroup_reduce(tid, s, false);
    // total >= 1 when any key is real (the max contributes exp(0)); 0 means all are padding.
    let inv = select(vec4<f32>(), 1.0 / total, total > vec4<f32>());

    for (var c = tid; c < dh; c += WG) {
        var o = vec4<f32>();
        for (var j = 0u; j < seq; j++) {
            o = fma(scores[j], vec4<f32>(qkv[(first + j) * stride + v_col + c]), o);
        }
        o *= inv;
        for (var r = 0u; r < QB && i0 + r < seq; r++) {
            out[(first + i0 + r) * d + h * dh + c] = o[r];
        }
    }
}
