//! Parity of a converted model file with the PyTorch reference's golden embeddings, for any
//! size of model (the full-size random one in particular; `engine/tests/parity.rs` does the same
//! for the committed tiny fixture). Driven by `tests/reference/full_size.sh`.
//!
//! ```sh
//! cargo run --release --example parity_full -- --dir /tmp/brivl-full --model /tmp/brivl-full/brivl-f32.safetensors \
//!     --backend cpu --max-images 3 --min-cosine 0.9999
//! ```
//!
//! Prints one line per golden image and text (cosine with the reference embedding, time), then
//! the worst image and text cosine; exits non-zero when token ids differ or a cosine is below
//! `--min-cosine`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::{photo, Gpu};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Gpu,
    Cpu,
}

/// Compare a brivl model file with golden.json from tests/reference/brivl_ref.py.
struct Args {
    /// `--dir`: folder written by `brivl_ref.py MODE --out DIR` (golden.json, images/).
    dir: PathBuf,
    /// `--model`: the converted model file (`brivl convert`).
    model: PathBuf,
    /// `--backend gpu|cpu` (cpu).
    backend: Backend,
    /// `--max-images N`: only the first N golden images (each is a full image-tower pass).
    max_images: Option<usize>,
    /// `--max-texts N`: only the first N texts of each text list (L=32 and L=80).
    max_texts: Option<usize>,
    /// `--min-cosine X`: fail below it (0.9999 for f32, 0.995 for f16 and q8).
    min_cosine: f64,
}

impl Args {
    /// Parsed by hand: the engine keeps command-line crates out of its dependencies.
    fn parse() -> Result<Self, String> {
        let (mut dir, mut model) = (None, None);
        let mut args = Args {
            dir: PathBuf::new(),
            model: PathBuf::new(),
            backend: Backend::Cpu,
            max_images: None,
            max_texts: None,
            min_cosine: 0.9999,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
            match flag.as_str() {
                "--dir" => dir = Some(PathBuf::from(value)),
                "--model" => model = Some(PathBuf::from(value)),
                "--backend" => {
                    args.backend = match value.as_str() {
                        "gpu" => Backend::Gpu,
                        "cpu" => Backend::Cpu,
                        _ => return Err(format!("--backend {value}: gpu or cpu")),
                    }
                }
                "--max-images" => args.max_images = Some(number(&value)?),
                "--max-texts" => args.max_texts = Some(number(&value)?),
                "--min-cosine" => args.min_cosine = value.parse().map_err(|e| format!("--min-cosine {value}: {e}"))?,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        args.dir = dir.ok_or("--dir is required")?;
        args.model = model.ok_or("--model is required")?;
        Ok(args)
    }
}

#[path = "../tests/support/cosine.rs"]
mod cosine;
use cosine::cosine;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("embedding array").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn pixels(path: &Path) -> Result<Pixels, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let img = photo::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Pixels { width: img.width as usize, height: img.height as usize, rgba: img.pack_rgba_u32() })
}

fn main() -> ExitCode {
    match Args::parse().map_err(Into::into).and_then(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("parity_full: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let golden_path = args.dir.join("golden.json");
    let golden: Value =
        serde_json::from_slice(&std::fs::read(&golden_path).map_err(|e| format!("{}: {e}", golden_path.display()))?)?;
    let t = Instant::now();
    let file = ModelFile::open(&args.model).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let gpu = match args.backend {
        Backend::Gpu => Some(pollster::block_on(Gpu::new())?),
        Backend::Cpu => None,
    };
    let mut embedder = Embedder::load(&file, gpu.as_ref())?;
    drop(file);
    println!(
        "model {} ({:.1} MB) on {}, loaded in {:.1} s",
        args.model.display(),
        std::fs::metadata(&args.model)?.len() as f64 / 1e6,
        embedder.backend_name(),
        t.elapsed().as_secs_f64()
    );

    let mut ok = true;
    let mut worst_image = (1f64, String::new());
    let images = golden["images"].as_array().ok_or("golden.json: no images")?;
    let n_images = args.max_images.unwrap_or(images.len()).min(images.len());
    for g in &images[..n_images] {
        // JPEG decoders differ by a few levels; the reference's own decode isolates the model.
        let name = g["pil_decoded_png"].as_str().or(g["file"].as_str()).ok_or("golden image without a file")?;
        let px = pixels(&args.dir.join("images").join(name))?;
        let t = Instant::now();
        let e = pollster::block_on(embedder.embed_images(&[px]))?;
        let c = cosine(&e[0], &floats(&g["embedding"]));
        println!("image {name:<28} cosine {c:.7}  ({:.1} s)", t.elapsed().as_secs_f64());
        if c < worst_image.0 {
            worst_image = (c, name.to_string());
        }
    }

    let mut worst_text = (1f64, String::new());
    let mut n_texts = 0;
    for key in ["texts", "texts_l80"] {
        let Some(list) = golden[key].as_array() else { continue };
        let len = if key == "texts" {
            golden["max_text_len"].as_u64().unwrap_or(32) as usize
        } else {
            golden["max_text_len_l80"].as_u64().unwrap_or(80) as usize
        };
        let n = args.max_texts.unwrap_or(list.len()).min(list.len());
        for g in &list[..n] {
            let text = g["text"].as_str().ok_or("golden text without text")?;
            let (ids, _) = embedder.tokenize(text, Some(len))?;
            let want: Vec<u32> = g["ids"]
                .as_array()
                .ok_or("golden text without ids")?
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            if ids != want {
                println!("text  L={len} {text:?}: TOKEN IDS DIFFER\n  ours {ids:?}\n  want {want:?}");
                ok = false;
            }
            let t = Instant::now();
            let e = pollster::block_on(embedder.embed_texts(&[text], Some(len)))?;
            let c = cosine(&e[0], &floats(&g["embedding"]));
            println!("text  L={len} cosine {c:.7}  ({:.2} s)  {text:?}", t.elapsed().as_secs_f64());
            if c < worst_text.0 {
                worst_text = (c, format!("L={len} {text:?}"));
            }
            n_texts += 1;
        }
    }

    println!("worst image cosine {:.7} ({} of {} images: {})", worst_image.0, n_images, images.len(), worst_image.1);
    println!(
        "worst text cosine  {:.7} ({} texts, token ids {}: {})",
        worst_text.0,
        n_texts,
        if ok { "identical" } else { "DIFFER" },
        worst_text.1
    );
    if worst_image.0 < args.min_cosine || worst_text.0 < args.min_cosine {
        println!("FAIL: below --min-cosine {}", args.min_cosine);
        ok = false;
    } else if ok {
        println!("PASS (>= {})", args.min_cosine);
    }
    Ok(ok)
}
