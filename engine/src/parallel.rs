//! Splitting CPU work over threads: over rayon's global pool (its threads are started once and
//! reused by every op) natively and in a wasm build with threads (`atomics`: the web app's
//! threaded engine worker, whose pool threads are Web Workers on one shared memory); on the
//! calling thread in a wasm build without them.
//!
//! `threaded` below is `any(not(target_arch = "wasm32"), target_feature = "atomics")`.

/// Threads the CPU path may use: the pool's size (natively `RAYON_NUM_THREADS`, else the
/// machine's parallelism; in the browser what the page started), 1 on wasm without threads.
pub fn threads() -> usize {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(any(not(target_arch = "wasm32"), target_feature = "atomics")))]
    {
        1
    }
}

/// Runs `f` on a thread of the pool (natively and with wasm threads), so that the ops of a forward
/// pass split their work from inside it: called from outside, every op wakes the pool and then
/// the waiting caller again (in the browser each wake-up goes through `Atomics.wait`, and a
/// text query is a few hundred ops). Always the pool's first thread: the pass allocates its
/// tensors there, and passes on alternating threads each grew that thread's malloc arena to a
/// pass's working set (peak resident 470 -> 484-604 MB natively). On the calling thread where
/// there is no pool.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if threads() > 1 && rayon::current_thread_index().is_none() {
        // Every thread runs the broadcast once; the others return at once and help the first.
        let job = std::sync::Mutex::new(Some(f));
        let mut out = rayon::broadcast(|ctx| {
            let f = if ctx.index() == 0 { job.lock().ok().and_then(|mut j| j.take()) } else { None };
            f.map(|f| f())
        });
        if let Some(r) = out.swap_remove(0) {
            return r;
        }
        unreachable!("the pool's first thread runs the pass");
    }
    f()
}

/// Runs `f(0..tasks)`, in parallel natively. Tasks must not depend on one another.
pub fn for_each(tasks: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if tasks > 1 && threads() > 1 {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().for_each(f);
        return;
    }
    (0..tasks).for_each(f);
}

/// `[f(0), .., f(tasks - 1)]`, computed in parallel natively.
pub fn map<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if tasks > 1 && threads() > 1 {
        use rayon::prelude::*;
        return (0..tasks).into_par_iter().map(f).collect();
    }
    (0..tasks).map(f).collect()
}

/// Calls `f(first_row, rows)` on consecutive chunks of `out` (rows of `row_len` values, chunks a
/// multiple of `align` rows but for the last), in parallel when `work` (about one unit per
/// multiply-add or value touched) is worth waking the pool for. Every row is written by exactly
/// one call.
pub fn for_row_chunks(
    out: &mut [f32],
    row_len: usize,
    align: usize,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    /// Below this much work per chunk a call stays on the calling thread (a pool wake-up costs
    /// a few µs).
    const MIN_WORK_PER_CHUNK: usize = 1 << 15;
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let align = align.max(1);
    // A few chunks per thread, so an uneven split evens out.
    let n = (4 * threads()).min(work / MIN_WORK_PER_CHUNK).min(rows.div_ceil(align)).max(1);
    if n == 1 {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(n).div_ceil(align) * align;
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(per * row_len).enumerate().for_each(|(i, chunk)| f(i * per, chunk));
    }
    #[cfg(not(any(not(target_arch = "wasm32"), target_feature = "atomics")))]
    out.chunks_mut(per * row_len).enumerate().for_each(|(i, chunk)| f(i * per, chunk));
}

/// A pointer to an output that tasks write in disjoint parts.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T = f32>(pub *mut T);
// SAFETY: only used to hand disjoint regions of one buffer to parallel tasks.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

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

    #[test]
    fn in_pool_runs_on_a_thread_of_the_pool_and_returns_its_value() {
        let (on_pool, v) = in_pool(|| (rayon::current_thread_index().is_some(), 7));
        assert_eq!(v, 7);
        assert_eq!(on_pool, threads() > 1);
    }

    #[test]
    fn every_task_runs_once() {
        let hits: Vec<std::sync::atomic::AtomicUsize> = (0..100).map(|_| Default::default()).collect();
        for_each(hits.len(), |i| {
            hits[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(std::sync::atomic::Ordering::Relaxed) == 1));
    }
}
