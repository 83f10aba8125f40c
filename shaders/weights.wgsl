// Element (n, k) of the packed weight matrix WEIGHTS ([rows, cols], row-major), as f32, for
// kernels that read weights one value at a time (`#include weights as NAME` names the array).
// The format comes from the defines: WF32 plain f32; WF16 two halves per word, rows padded to
// whole words; WQ8 four signed bytes per word, rows padded to whole words, then one f32 scale per
// q8_group values of a row, row by row, after the last row (as quant.rs packs them).
fn WEIGHTS_at(n: u32, k: u32, rows: u32, cols: u32, q8_group: u32) -> f32 {
#ifdef WF32
    return WEIGHTS[n * cols + k];
#endif
#ifdef WF16
    return unpack2x16float(WEIGHTS[n * ((cols + 1u) / 2u) + k / 2u])[k & 1u];
#endif
#ifdef WQ8
    let row_words = (cols + 3u) / 4u;
    let groups = (cols + q8_group - 1u) / q8_group;
    let q = f32(extractBits(bitcast<i32>(WEIGHTS[n * row_words + k / 4u]), (k & 3u) * 8u, 8u));
    return q * bitcast<f32>(WEIGHTS[rows * row_words + n * groups + k / q8_group]);
#endif
}
