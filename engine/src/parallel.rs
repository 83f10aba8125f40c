//! Splitting CPU-twin work over threads: natively with `std::thread::scope`, one thread on wasm
//! (the browser's main thread has no threads to give).

/// Below this many multiply-adds a call stays on the calling thread (spawning costs ~10 µs).
const MIN_WORK_PER_THREAD: usize = 1 << 18;

/// Threads for CPU work: the machine's parallelism on native, 1 on wasm.
pub fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

/// Calls `f(first_row, rows)` on consecutive chunks of `out` (rows of `row_len` values, chunks
/// a multiple of `align` rows but for the last), in parallel when `work` (multiply-adds in all)
/// is worth it. Every row is written by exactly one call.
pub fn for_row_chunks(
    out: &mut [f32],
    row_len: usize,
    align: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let n = threads().min(work / MIN_WORK_PER_THREAD).min(rows.div_ceil(align.max(1))).max(1);
    if n == 1 {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(n).div_ceil(align.max(1)) * align.max(1);
    std::thread::scope(|s| {
        let f = &f;
        for (i, chunk) in out.chunks_mut(per * row_len).enumerate() {
            s.spawn(move || f(i * per, chunk));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_written_once_whatever_the_split() {
        for (rows, row_len, align, work) in [(0, 3, 4, 1 << 30), (1, 5, 4, 1 << 30), (37, 3, 4, 1 << 30), (9, 2, 1, 0)]
        {
            let mut out = vec![0f32; rows * row_len];
            for_row_chunks(&mut out, row_len, align, work, |first, chunk| {
                for (r, row) in chunk.chunks_exact_mut(row_len).enumerate() {
                    row.iter_mut().for_each(|v| *v += (first + r) as f32);
                }
            });
            let want: Vec<f32> = (0..rows).flat_map(|r| std::iter::repeat_n(r as f32, row_len)).collect();
            assert_eq!(out, want, "rows {rows} x {row_len}, align {align}");
        }
    }
}
