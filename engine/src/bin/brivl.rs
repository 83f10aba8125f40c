//! `brivl`: the desktop build. Convert a checkpoint, embed photos and texts, benchmark.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::{checkpoint, convert, photo, DType, Gpu};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "brivl", version, about = "Private photo search with BriVL, on your own device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Quant {
    F32,
    F16,
    Q8,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum BackendChoice {
    Gpu,
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a released BriVL PyTorch checkpoint into a brivl model file.
    Convert {
        checkpoint: PathBuf,
        #[arg(long)]
        vocab: PathBuf,
        #[arg(long, value_enum, default_value = "q8")]
        quant: Quant,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 456)]
        image_size: usize,
        #[arg(long, default_value_t = 6)]
        box_grid: usize,
        #[arg(long, default_value_t = 4)]
        pool_grid: usize,
        #[arg(long, default_value_t = 4)]
        img_heads: usize,
        #[arg(long, default_value_t = 4)]
        text_heads: usize,
        #[arg(long, default_value_t = 12)]
        bert_heads: usize,
        #[arg(long, default_value_t = 32)]
        max_text_len: usize,
    },
    /// Embed images and texts; one JSON line per input, in input order.
    Embed {
        #[arg(long)]
        model: PathBuf,
        /// A folder of photos (walked recursively, sorted by path).
        #[arg(long)]
        images: Option<PathBuf>,
        #[arg(long = "image")]
        image: Vec<PathBuf>,
        /// A file with one text per line.
        #[arg(long)]
        texts: Option<PathBuf>,
        #[arg(long = "text")]
        text: Vec<String>,
        #[arg(long)]
        max_text_len: Option<usize>,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: BackendChoice,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the towers at batch 1 and 8.
    Bench {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: BackendChoice,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brivl: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> AnyResult<()> {
    match cli.command {
        Command::Convert {
            checkpoint: ckpt,
            vocab,
            quant,
            output,
            image_size,
            box_grid,
            pool_grid,
            img_heads,
            text_heads,
            bert_heads,
            max_text_len,
        } => {
            let config = BrivlConfig {
                image_size,
                box_grid,
                pool_grid,
                img_heads,
                text_heads,
                bert_heads,
                max_text_len,
                ..BrivlConfig::default()
            };
            let vocab = std::fs::read_to_string(&vocab).map_err(|e| format!("{}: {e}", vocab.display()))?;
            let bytes = std::fs::read(&ckpt).map_err(|e| format!("{}: {e}", ckpt.display()))?;
            let source = checkpoint::read_checkpoint(&bytes).map_err(|e| format!("{}: {e}", ckpt.display()))?;
            let dtype = match quant {
                Quant::F32 => DType::F32,
                Quant::F16 => DType::F16,
                Quant::Q8 => DType::Q8,
            };
            let out = convert::convert(&convert::state_dict(&source), &vocab, &config, dtype)?;
            write_atomically(&output, &out.bytes)?;
            println!(
                "wrote {} ({:.1} MB, {} tensors, {:.1} M parameters, sha256 {})",
                output.display(),
                out.bytes.len() as f64 / 1e6,
                out.tensors,
                out.parameters as f64 / 1e6,
                &out.content_hash[..16]
            );
            Ok(())
        }
        Command::Embed { model, images, image, texts, text, max_text_len, backend, out } => {
            let mut embedder = load(&model, backend)?;
            let mut files = image;
            if let Some(dir) = images {
                files.extend(walk(&dir)?);
            }
            let mut all_texts = text;
            if let Some(f) = texts {
                let s = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                all_texts.extend(s.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
            }
            let mut w =
                std::io::BufWriter::new(std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?);
            for chunk in files.chunks(8) {
                let mut ok = Vec::new();
                let mut lines: Vec<Option<String>> = Vec::new();
                for f in chunk {
                    let name = f.display().to_string();
                    match std::fs::read(f)
                        .map_err(|e| e.to_string())
                        .and_then(|b| photo::decode(&b).map_err(|e| e.to_string()))
                    {
                        Ok(img) => {
                            ok.push((
                                name,
                                Pixels {
                                    width: img.width as usize,
                                    height: img.height as usize,
                                    rgba: img.pack_rgba_u32(),
                                },
                            ));
                            lines.push(None);
                        }
                        Err(e) => {
                            lines.push(Some(serde_json::json!({"kind": "error", "name": name, "error": e}).to_string()))
                        }
                    }
                }
                let pixels: Vec<Pixels> = ok
                    .iter_mut()
                    .map(|(_, p)| std::mem::replace(p, Pixels { width: 0, height: 0, rgba: vec![] }))
                    .collect();
                let embs = pollster::block_on(embedder.embed_images(&pixels))?;
                let mut embs = ok.into_iter().map(|(n, _)| n).zip(embs);
                for line in lines {
                    let line = line.unwrap_or_else(|| {
                        let (name, e) = embs.next().expect("one embedding per decoded image");
                        serde_json::json!({"kind": "image", "name": name, "embedding": e}).to_string()
                    });
                    writeln!(w, "{line}")?;
                }
            }
            for chunk in all_texts.chunks(32) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let embs = pollster::block_on(embedder.embed_texts(&refs, max_text_len))?;
                for (t, e) in chunk.iter().zip(embs) {
                    writeln!(w, "{}", serde_json::json!({"kind": "text", "text": t, "embedding": e}))?;
                }
            }
            w.flush()?;
            Ok(())
        }
        Command::Bench { model, backend, repeats } => {
            let mut embedder = load(&model, backend)?;
            println!("backend: {}", embedder.backend_name());
            let size = embedder.config.image_size;
            for batch in [1usize, 8] {
                let images: Vec<Pixels> = (0..batch)
                    .map(|i| Pixels {
                        width: size,
                        height: size,
                        rgba: (0..size * size)
                            .map(|p| (p as u32).wrapping_mul(2654435761).wrapping_add(i as u32))
                            .collect(),
                    })
                    .collect();
                let f0 = embedder.flops();
                let ms =
                    time_per_item(repeats, batch, || pollster::block_on(embedder.embed_images(&images)).map(drop))?;
                report("image", batch, ms, (embedder.flops() - f0) / ((repeats + 1) * batch) as u64);
                let texts: Vec<String> = (0..batch).map(|i| format!("海边的日落 {i}")).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let f0 = embedder.flops();
                let ms =
                    time_per_item(repeats, batch, || pollster::block_on(embedder.embed_texts(&refs, None)).map(drop))?;
                report("text", batch, ms, (embedder.flops() - f0) / ((repeats + 1) * batch) as u64);
            }
            Ok(())
        }
    }
}

fn report(what: &str, batch: usize, ms: f64, flop: u64) {
    let gflop = flop as f64 / 1e9;
    println!("{what:<5} batch {batch}: {ms:8.1} ms per {what}, {gflop:.3} GFLOP each, {:.2} GFLOP/s", gflop / ms * 1e3);
}

/// Milliseconds per item of `run`, after one warm-up call (pipelines compile on first use).
fn time_per_item(repeats: usize, batch: usize, mut run: impl FnMut() -> brivl_engine::Result<()>) -> AnyResult<f64> {
    run()?;
    let t = Instant::now();
    for _ in 0..repeats {
        run()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / (repeats * batch) as f64)
}

fn load(model: &Path, backend: BackendChoice) -> AnyResult<Embedder> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let file = ModelFile::parse(&bytes).map_err(|e| format!("{}: {e}", model.display()))?;
    let gpu = match backend {
        BackendChoice::Gpu => Some(pollster::block_on(Gpu::new())?),
        BackendChoice::Cpu => None,
    };
    Ok(Embedder::load(&file, gpu.as_ref())?)
}

/// Every file under `dir`, sorted by path.
fn walk(dir: &Path) -> AnyResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes to a temporary file beside `path`, then renames: a crash never leaves half a model.
fn write_atomically(path: &Path, bytes: &[u8]) -> AnyResult<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}
