//! `brivl`: the desktop build. Convert a checkpoint, embed photos and texts, index folders of
//! photos and search them, benchmark.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use brivl_desktop::indexer::{self, IndexOptions};
use brivl_desktop::store::{ModelId, Store};
use brivl_desktop::{atomic_file, search, walk, DesktopError};
use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::models::brivl::{self, BrivlConfig};
use brivl_engine::{checkpoint, convert, photo, DType, Gpu};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Exit codes, the same for every command.
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  error (the reason is printed on stderr, on one line)
  2  bad command line
  3  the index was made with another model (refused, nothing written)
  4  index: finished, but some photos could not be read (listed on stderr; files that are not
     photos at all, like videos or documents, are only counted)";

const EXIT_ERROR: u8 = 1;
const EXIT_OTHER_MODEL: u8 = 3;
const EXIT_UNREADABLE: u8 = 4;

#[derive(Parser)]
#[command(name = "brivl", version, about = "Private photo search with BriVL, on your own device", after_help = EXIT_CODES)]
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

/// `brivl convert`'s model options; each default is `BrivlConfig`'s (the release's values).
#[derive(Args)]
struct ConfigArgs {
    #[arg(long, default_value_t = BrivlConfig::default().image_size)]
    image_size: usize,
    #[arg(long, default_value_t = BrivlConfig::default().box_grid)]
    box_grid: usize,
    #[arg(long, default_value_t = BrivlConfig::default().pool_grid)]
    pool_grid: usize,
    #[arg(long, default_value_t = BrivlConfig::default().img_heads)]
    img_heads: usize,
    #[arg(long, default_value_t = BrivlConfig::default().text_heads)]
    text_heads: usize,
    #[arg(long, default_value_t = BrivlConfig::default().bert_heads)]
    bert_heads: usize,
    #[arg(long, default_value_t = BrivlConfig::default().max_text_len)]
    max_text_len: usize,
}

impl ConfigArgs {
    fn config(&self) -> BrivlConfig {
        let Self { image_size, box_grid, pool_grid, img_heads, text_heads, bert_heads, max_text_len } = *self;
        BrivlConfig {
            image_size,
            box_grid,
            pool_grid,
            img_heads,
            text_heads,
            bert_heads,
            max_text_len,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
#[command(after_help = EXIT_CODES)]
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
        /// What the weights don't determine (the defaults are the release's).
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Embed images and texts; one JSON line per input, in input order.
    Embed {
        #[arg(long)]
        model: PathBuf,
        /// A folder of photos (walked as `brivl index` walks it: recursively, sorted by path,
        /// hidden files and symlinked folders skipped).
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
    /// Index folders of photos for search (incremental; safe to interrupt and run again).
    ///
    /// Walks the folders recursively (hidden files and folders are skipped), reads and decodes
    /// photos on worker threads while the model embeds them, and stores path, size, modification
    /// time, content hash and embedding in an SQLite index. Unchanged files are skipped, changed
    /// ones embedded again, deleted ones dropped; a renamed or copied photo is recognised by its
    /// content hash and not embedded again. Every batch is committed as it is done, so an
    /// interrupted run (Ctrl-C, kill) keeps what it embedded and the next run continues. Files
    /// that cannot be read are listed at the end with the reason. An index holds one model's
    /// embeddings; indexing into it with another model is refused.
    #[command(after_help = EXIT_CODES)]
    Index {
        /// Folders (or single files) to index.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The brivl model file (from `brivl convert`).
        #[arg(long)]
        model: PathBuf,
        /// The index file [default: index.sqlite in the user's data directory, e.g.
        /// ~/.local/share/brivl on Linux]
        #[arg(long)]
        db: Option<PathBuf>,
        /// gpu: the system's adapter (Vulkan, Metal, DX12); cpu: the pure-Rust path.
        #[arg(long, value_enum, default_value = "gpu")]
        backend: BackendChoice,
        /// Photos per forward pass.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Decoding threads [default: the number of cores, at most 8]
        #[arg(long)]
        workers: Option<usize>,
        /// Files larger than this are not read (listed when they look like photos).
        #[arg(long, default_value_t = indexer::MAX_FILE_BYTES >> 20)]
        max_file_mb: u64,
        /// Memory for photos in flight between reading and the model, in MiB (one larger photo
        /// still goes through alone).
        #[arg(long, default_value_t = indexer::MEMORY_BUDGET >> 20)]
        memory_mb: u64,
    },
    /// Search an index by text or by example photo; prints score and path, best first.
    ///
    /// A photo given with --image that is already in the index is looked up by its content hash
    /// and needs no model; otherwise the model the index was made with is loaded (--model, or the
    /// one recorded by `brivl index`).
    #[command(after_help = EXIT_CODES, group(ArgGroup::new("what").required(true).args(["query", "image"])))]
    Search {
        /// What to look for, e.g. 海边的日落.
        query: Option<String>,
        /// Find photos similar to this one instead.
        #[arg(long)]
        image: Option<PathBuf>,
        /// The index file [default: as for `brivl index`]
        #[arg(long)]
        db: Option<PathBuf>,
        /// The model file [default: the one `brivl index` last used on this index]
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        top_k: usize,
        /// Leave out results scoring below this cosine similarity.
        #[arg(long)]
        min_score: Option<f32>,
        /// One JSON object: {"query", "query_used" (the Chinese the model read), "lang", "unknown"
        /// (English words kept as typed), "image", "results": [{"path", "score"}]}.
        #[arg(long)]
        json: bool,
        /// Where the query is embedded when the model is needed (gpu or cpu).
        #[arg(long, value_enum, default_value = "gpu")]
        backend: BackendChoice,
    },
    /// Time the towers at batch 1 and 8.
    Bench {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum, default_value = "gpu")]
        backend: BackendChoice,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Batch sizes to time (repeat the flag); 1 and 8 by default.
        #[arg(long = "batch", value_name = "N")]
        batches: Vec<usize>,
        /// After timing, one more forward per tower and batch with a per-kernel-family table:
        /// dispatches, bytes bound, FLOPs, and GPU time where the adapter has timestamp queries.
        #[arg(long)]
        profile: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("brivl: {}", e.to_string().replace('\n', " "));
            let code = match e.downcast_ref::<DesktopError>() {
                Some(DesktopError::OtherModel { .. }) => EXIT_OTHER_MODEL,
                _ => EXIT_ERROR,
            };
            ExitCode::from(code)
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs a command; `Ok` carries the exit code (0, or 4 when `index` could not read some files).
fn run(cli: Cli) -> AnyResult<u8> {
    match cli.command {
        Command::Index { dirs, model, db, backend, batch, workers, max_file_mb, memory_mb } => {
            let defaults = IndexOptions::default();
            let opts = IndexOptions {
                batch,
                workers: workers.unwrap_or(defaults.workers),
                max_file_bytes: max_file_mb.saturating_mul(1 << 20),
                memory_budget: memory_mb.saturating_mul(1 << 20),
                ..defaults
            };
            index(&dirs, &model, db, backend, &opts)
        }
        Command::Search { query, image, db, model, top_k, min_score, json, backend } => {
            search(query.as_deref(), image.as_deref(), db, model, top_k, min_score, json, backend)?;
            Ok(0)
        }
        cmd => run_engine(cmd).map(|()| 0),
    }
}

fn run_engine(cmd: Command) -> AnyResult<()> {
    match cmd {
        Command::Convert { checkpoint: ckpt, vocab, quant, output, config } => {
            let config = config.config();
            let vocab = std::fs::read_to_string(&vocab).map_err(|e| format!("{}: {e}", vocab.display()))?;
            // Read in slices and written at offsets as each tensor is made: memory holds about
            // one tensor, not the checkpoint and the model (the web app converts the same way).
            let file = std::fs::File::open(&ckpt).map_err(|e| format!("{}: {e}", ckpt.display()))?;
            let source = checkpoint::read_checkpoint_from(&file).map_err(|e| format!("{}: {e}", ckpt.display()))?;
            let dtype = match quant {
                Quant::F32 => DType::F32,
                Quant::F16 => DType::F16,
                Quant::Q8 => DType::Q8,
            };
            let state_dict = convert::state_dict(&source);
            let plan = convert::plan(&state_dict, &vocab, &config, dtype)?;
            let (tensors, parameters, bytes) = (plan.tensors(), plan.parameters(), plan.total_bytes());
            let hash = write_atomically(&output, plan)?;
            println!(
                "wrote {} ({:.1} MB, {} tensors, {:.1} M parameters, sha256 {})",
                output.display(),
                bytes as f64 / 1e6,
                tensors,
                parameters as f64 / 1e6,
                &hash[..16]
            );
            Ok(())
        }
        Command::Embed { model, images, image, texts, text, max_text_len, backend, out } => {
            let mut embedder = load(&model, backend)?;
            let mut files = image;
            if let Some(dir) = images {
                let walked = walk::walk(&[dir])?;
                for p in &walked.problems {
                    eprintln!("brivl: {}: {}", p.path, p.error);
                }
                files.extend(walked.files.into_iter().map(|f| PathBuf::from(f.path)));
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
        Command::Bench { model, backend, repeats, batches, profile } => {
            let mut embedder = load(&model, backend)?;
            println!("backend: {}", embedder.backend_name());
            let size = embedder.config.image_size;
            let batches = if batches.is_empty() { vec![1, 8] } else { batches };
            for batch in batches.into_iter().map(|b| b.max(1)) {
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
                if profile {
                    profiled(&mut embedder, "image", batch, |e| pollster::block_on(e.embed_images(&images)).map(drop))?;
                }
                let texts: Vec<String> = (0..batch).map(|i| format!("海边的日落 {i}")).collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let f0 = embedder.flops();
                let ms =
                    time_per_item(repeats, batch, || pollster::block_on(embedder.embed_texts(&refs, None)).map(drop))?;
                report("text", batch, ms, (embedder.flops() - f0) / ((repeats + 1) * batch) as u64);
                if profile {
                    profiled(&mut embedder, "text", batch, |e| {
                        pollster::block_on(e.embed_texts(&refs, None)).map(drop)
                    })?;
                }
                if let Some(gpu) = embedder.gpu() {
                    let free = gpu.pool_bytes().free as f64 / 1e6;
                    println!("GPU intermediate buffers kept after batch {batch}: {free:.1} MB");
                }
            }
            Ok(())
        }
        Command::Index { .. } | Command::Search { .. } => unreachable!("handled by run"),
    }
}

/// A file name as terminal output shows it: control characters (newlines, escape sequences) as
/// `\u{..}` escapes, so a crafted name can neither forge lines nor drive the terminal. `--json`
/// output is escaped by JSON instead.
fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

fn report(what: &str, batch: usize, ms: f64, flop: u64) {
    let gflop = flop as f64 / 1e9;
    println!("{what:<5} batch {batch}: {ms:8.1} ms per {what}, {gflop:.3} GFLOP each, {:.2} GFLOP/s", gflop / ms * 1e3);
}

/// Runs `run` once with profiling on and prints the per-family table, per item of the batch.
fn profiled(
    embedder: &mut Embedder,
    what: &str,
    batch: usize,
    run: impl FnOnce(&mut Embedder) -> brivl_engine::Result<()>,
) -> AnyResult<()> {
    let Some(gpu) = embedder.gpu().cloned() else {
        println!("  (--profile counts GPU dispatches: nothing to show on the CPU path)");
        return Ok(());
    };
    gpu.start_profile();
    let result = run(embedder);
    let p = gpu.take_profile().unwrap_or_default();
    result?;
    let per = |v: u64| v as f64 / batch as f64;
    let mb = |v: u64| per(v) / 1e6;
    let ms = |ns: Option<u64>| ns.map_or("-".to_string(), |ns| format!("{:.2}", per(ns) / 1e6));
    println!(
        "  per {what}: {:.1} dispatches, activations bound {:.1} MB, weights bound {:.1} MB, GPU {} ms",
        per(p.dispatches()),
        mb(p.activation_bytes()),
        mb(p.weight_bytes()),
        ms(p.gpu_ns())
    );
    println!("  {:<16} {:>9} {:>9} {:>10} {:>9} {:>9}", "kernel", "dispatch", "GPU ms", "act MB", "GFLOP/s", "GB/s");
    for f in &p.families {
        let rate = |x: f64| f.gpu_ns.filter(|&ns| ns > 0).map_or("-".to_string(), |ns| format!("{:.1}", x / ns as f64));
        println!(
            "  {:<16} {:>9.1} {:>9} {:>10.2} {:>9} {:>9}",
            f.family,
            per(f.dispatches),
            ms(f.gpu_ns),
            mb(f.activation_bytes),
            if f.flops > 0 { rate(f.flops as f64) } else { "-".to_string() },
            rate((f.activation_bytes + f.weight_bytes) as f64)
        );
    }
    Ok(())
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
    onto(&read_model(model)?, backend)
}

/// The model file, verified, its tensors read from disk as they are loaded.
fn read_model(model: &Path) -> AnyResult<ModelFile<'static>> {
    Ok(ModelFile::open(model).map_err(|e| format!("{}: {e}", model.display()))?)
}

/// What an index records about the model: its hash and embedding width.
fn model_id(file: &ModelFile) -> AnyResult<ModelId> {
    Ok(ModelId { hash: file.content_hash.clone(), dim: brivl::embedding_dim(file)? })
}

fn onto(file: &ModelFile, backend: BackendChoice) -> AnyResult<Embedder> {
    let gpu = match backend {
        BackendChoice::Gpu => Some(pollster::block_on(Gpu::new())?),
        BackendChoice::Cpu => None,
    };
    Ok(Embedder::load(file, gpu.as_ref())?)
}

/// A crash or an error never leaves half a model, nor a temporary file. Returns the content hash.
fn write_atomically(path: &Path, plan: convert::Plan<'_>) -> AnyResult<String> {
    let mut hash = String::new();
    atomic_file::write_with(path, |w| {
        // Positioned writes to the temporary file (its buffered writer stays empty).
        hash = plan.write(w.get_ref(), &mut |_, _| {}).map_err(std::io::Error::other)?.1;
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hash)
}

/// `--db`, or index.sqlite in the user's data directory.
fn db_path(db: Option<PathBuf>) -> AnyResult<PathBuf> {
    if let Some(db) = db {
        return Ok(db);
    }
    let dirs = directories::ProjectDirs::from("", "", "brivl")
        .ok_or("no home directory to keep the index in; pass --db FILE")?;
    Ok(dirs.data_dir().join("index.sqlite"))
}

fn index(
    dirs: &[PathBuf],
    model: &Path,
    db: Option<PathBuf>,
    backend: BackendChoice,
    opts: &IndexOptions,
) -> AnyResult<u8> {
    let db = db_path(db)?;
    let file = read_model(model)?;
    let id = model_id(&file)?;
    // A new index is bound to the model only once the model has loaded.
    let new_index = !db.try_exists().map_err(|e| format!("{}: {e}", db.display()))?;
    let mut embedder = if new_index { Some(onto(&file, backend)?) } else { None };
    let mut store = Store::open_for_model(&db, &id, Some(model))?;
    let plan = indexer::plan(&store, dirs)?;
    eprintln!(
        "brivl: {} to read, {} unchanged, {} gone; index {}",
        plan.todo.len(),
        plan.unchanged,
        plan.removed.len(),
        terminal_safe(&db.display().to_string())
    );
    // Otherwise the model goes onto the device only when some photo may need it.
    if embedder.is_none() && !plan.todo.is_empty() {
        embedder = Some(onto(&file, backend)?);
    }
    drop(file);
    let bar = indicatif::ProgressBar::new(plan.todo.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} files, {per_sec}, {eta} left",
        )?
        .progress_chars("=> "),
    );
    let stamp = store.stamp()?;
    let t = Instant::now();
    let mut progress = |done: usize| bar.set_position(done as u64);
    let report = match embedder.as_mut() {
        Some(e) => indexer::run(&mut store, e, plan, opts, &mut progress)?,
        // Nothing to embed: every file is unchanged, known or gone.
        None => {
            let mut none = indexer::EachBatch(|_: &[Pixels]| Err(brivl_engine::Error::Model("no model loaded".into())));
            indexer::run(&mut store, &mut none, plan, opts, &mut progress)?
        }
    };
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    if store.stamp()? != stamp || !search::cache_path(&db).exists() {
        search::open_matrix(&store)?; // the search matrix, so the next search starts fast
    }
    println!(
        "indexed {} photos: {} embedded ({:.1}/s), {} reused by content hash, {} unchanged, {} removed, {} unreadable, {} not photos",
        report.photos,
        report.embedded,
        report.embedded as f64 / secs.max(1e-9),
        report.reused,
        report.unchanged,
        report.removed,
        report.failures.len(),
        report.not_photos
    );
    if report.failures.is_empty() {
        return Ok(0);
    }
    eprintln!("brivl: could not read {} photos:", report.failures.len());
    for f in &report.failures {
        eprintln!("  {}: {}", terminal_safe(&f.path), terminal_safe(&f.error));
    }
    Ok(EXIT_UNREADABLE)
}

#[allow(clippy::too_many_arguments)] // one per command-line option
fn search(
    query: Option<&str>,
    image: Option<&Path>,
    db: Option<PathBuf>,
    model: Option<PathBuf>,
    top_k: usize,
    min_score: Option<f32>,
    json: bool,
    backend: BackendChoice,
) -> AnyResult<()> {
    let db = db_path(db)?;
    let store = Store::open_existing(&db)?;
    let prepared = query.map(search::prepare_query).transpose()?;
    let query_used = prepared.as_ref().map(|p| p.query_used.clone());
    // The model is loaded only when the query needs it (text, or a photo not in the index).
    let load_model = || -> AnyResult<Embedder> {
        let path = match &model {
            Some(m) => m.clone(),
            None => store.model_path()?.ok_or("the index does not record its model; pass --model")?,
        };
        let file = read_model(&path)?;
        store
            .model
            .accepts(&model_id(&file)?)
            .map_err(|source| DesktopError::OtherModel { index: db.display().to_string(), source })?;
        onto(&file, backend)
    };
    let embedding = match (image, &query_used) {
        (Some(img), _) => {
            let bytes = std::fs::read(img).map_err(|e| format!("{}: {e}", img.display()))?;
            match store.embedding_by_hash(&indexer::content_hash(&bytes))? {
                Some(e) => store.decode(-1, &e)?,
                None => {
                    let pixels = indexer::decode_pixels(&bytes, &photo::PhotoLimits::default())
                        .map_err(|e| format!("{}: {e}", img.display()))?;
                    let mut e = pollster::block_on(load_model()?.embed_images(&[pixels]))?;
                    e.pop().ok_or("the model returned no embedding")?
                }
            }
        }
        (None, Some(q)) => {
            let mut e = pollster::block_on(load_model()?.embed_texts(&[q.as_str()], None))?;
            e.pop().ok_or("the model returned no embedding")?
        }
        (None, None) => unreachable!("clap requires QUERY or --image"),
    };
    let coarse = search::open_matrix(&store)?;
    let hits = search::search(&store, &coarse, &embedding, top_k, min_score)?;
    let mut out = std::io::stdout().lock();
    if json {
        let results: Vec<_> = hits.iter().map(|h| serde_json::json!({"path": h.path, "score": h.score})).collect();
        let doc = serde_json::json!({
            "query": query,
            "query_used": query_used,
            "lang": prepared.as_ref().map(|p| p.lang),
            "unknown": prepared.as_ref().map(|p| &p.unknown),
            "image": image.map(|p| p.display().to_string()),
            "model": store.model.short(),
            "results": results,
        });
        writeln!(out, "{doc}")?;
    } else {
        // Say what the model read when it is not what was typed (stderr keeps stdout parseable).
        if let (Some(q), Some(used)) = (query, &query_used) {
            if q.trim() != used {
                eprintln!("query used: {used}");
            }
        }
        for h in &hits {
            writeln!(out, "{:.4}\t{}", h.score, terminal_safe(&h.path))?;
        }
    }
    Ok(())
}
