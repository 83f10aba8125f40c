//! Wall time of each op of the CPU path, for profiling natively: with `BRIVL_CPU_OP_TIMES` set,
//! every GEMM, conv and depthwise conv of the CPU backend prints `cpu-op<TAB>what<TAB>ms` to
//! stderr; `tests/bench/cpu_op_times.py` sums the lines per op. Off otherwise (nothing is
//! formatted or timed), and never on wasm (no clock there without the browser's).

/// An op being timed: prints its line when dropped.
pub(crate) struct OpTimer {
    what: String,
    start: std::time::Instant,
}

/// A timer for the op `what()` describes, when timing is on.
pub(crate) fn start(what: impl FnOnce() -> String) -> Option<OpTimer> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *ON.get_or_init(|| std::env::var_os("BRIVL_CPU_OP_TIMES").is_some()) {
            return Some(OpTimer { what: what(), start: std::time::Instant::now() });
        }
    }
    let _ = what;
    None
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        eprintln!("cpu-op\t{}\t{:.3}", self.what, self.start.elapsed().as_secs_f64() * 1e3);
    }
}
