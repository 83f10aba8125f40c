// y[t, c] = table[min(ids[t], V - 1), c] (+ add[t % L, c]): a row gather from a [V, D] table in
// f32, packed f16 (unpack2x16float, no shader-f16 needed) or packed q8 (one scale per q8_group
// values of a row).
//
// One thread per output element, 256 per workgroup, folded into y by Pass::grid. Ids are
// clamped so a bad id reads the last row instead of out of bounds. Defines: TF32 | TF16 | TQ8
// pick the table format; ADD adds row l of add [Lmax, D] to position l of every sequence.

@group(0) @binding(0) var<uniform> params: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#ifdef TF32
@group(0) @binding(2) var<storage, read> table: array<f32>;
#else
@group(0) @binding(2) var<storage, read> table: array<u32>;
#endif
#ifdef ADD
@group(0) @binding(3) var<storage, read> add: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif

fn lookup(r: u32, c: u32) -> f32 {
#ifdef TF32
    return table[r * params.d + c];
#endif
#ifdef TF16
    return unpack2x16float(table[r * params.row_words + c / 2u])[c & 1u];
#endif
#ifdef TQ8
    // extractBits on i32 sign-extends the byte; the scales follow the last row, row by row.
    let q = extractBits(bitcast<i32>(table[r * params.row_words + c / 4u]), (c & 3u) * 8u, 8u);
    return f32(q) * bitcast<f32>(table[params.vocab * params.row_words + r * params.groups + c / params.q8_group]);
#endif
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * 256u + tid;
    if (e >= params.tokens * params.d) {
        return;
    }
    let t = e / params.d;
    let c = e % params.d;
    var v = lookup(min(ids[t], params.vocab - 1u), c);
#ifdef ADD
    v += add[(t % params.len) * params.d + c];
#endif
    y[e] = v;
}
