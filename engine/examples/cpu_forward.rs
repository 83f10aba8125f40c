//! One tower on the CPU path, in a loop, for profiling (`perf record -g`, valgrind) without the
//! rest of `brivl bench`:
//!
//! ```sh
//! cargo run --release -p brivl-engine --example cpu_forward -- MODEL image|text BATCH REPEATS
//! ```
//!
//! Prints ms per item of each repeat (after one warm-up pass), the SIMD level used
//! (`BRIVL_CPU_SIMD` caps it; `RAYON_NUM_THREADS` sets the threads) and, on Linux, resident
//! memory after loading and after the runs (`VmRSS`, and the peak so far, `VmHWM`).

use std::process::ExitCode;
use std::time::Instant;

use brivl_engine::cpu::Level;
use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, kind, batch, repeats] = &args[..] else {
        eprintln!("usage: cpu_forward MODEL image|text BATCH REPEATS");
        return ExitCode::FAILURE;
    };
    match run(model, kind, batch.parse().unwrap_or(1), repeats.parse().unwrap_or(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpu_forward: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(model: &str, kind: &str, batch: usize, repeats: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut embedder = Embedder::load(&ModelFile::open(std::path::Path::new(model))?, None)?;
    memory("after loading");
    let size = embedder.config.image_size;
    let images: Vec<Pixels> = (0..batch)
        .map(|i| Pixels {
            width: size,
            height: size,
            rgba: (0..size * size).map(|p| (p as u32).wrapping_mul(2654435761).wrapping_add(i as u32)).collect(),
        })
        .collect();
    let texts: Vec<String> = (0..batch).map(|i| format!("海边的日落 {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    println!("SIMD level {:?}", Level::current());
    for i in 0..=repeats {
        let t = Instant::now();
        match kind {
            "image" => drop(pollster::block_on(embedder.embed_images(&images))?),
            "text" => drop(pollster::block_on(embedder.embed_texts(&texts, None))?),
            _ => return Err(format!("unknown tower {kind:?}").into()),
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / batch as f64;
        println!("{} {kind} batch {batch}: {ms:.1} ms per item", if i == 0 { "warm-up" } else { "run" });
    }
    memory("after the runs");
    Ok(())
}

/// Prints `VmRSS` and `VmHWM` from /proc/self/status, where there is one.
fn memory(when: &str) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return };
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    println!("resident {when}: {} (peak so far {})", field("VmRSS:"), field("VmHWM:"));
}
