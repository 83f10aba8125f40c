//! Desktop indexing and search throughput. Not a test: `cargo bench -p brivl-desktop --bench index`.
//!
//! 1. `brivl index`'s pipeline on an album (decode on worker threads + embed + SQLite) against
//!    decoding alone and embedding alone (pixels decoded beforehand), in photos per second.
//! 2. Search latency over a synthetic index of 100 000 random 2048-d embeddings: loading the
//!    int8 matrix from SQLite, one query (int8 scan + exact rescoring), an exact f32 scan for
//!    comparison, and how many of the exact top 20 the fast path returns.
//!
//! The album and model: `BRIVL_BENCH_ALBUM` and `BRIVL_BENCH_MODEL`, else the demo album
//! (`www/demo/album/`, `www/models/brivl-demo-q8.safetensors`) when present, else the tiny
//! fixture model and 48 synthesized 640x480 photos. `BRIVL_BENCH_BACKEND=cpu` runs the CPU path;
//! `BRIVL_BENCH_ROWS` / `BRIVL_BENCH_DIM` size the synthetic index.

use std::path::{Path, PathBuf};
use std::time::Instant;

use brivl_core::encoding::to_f16_bytes;
use brivl_core::ranking::rescore_count;
use brivl_desktop::indexer::{self, IndexOptions};
use brivl_desktop::search;
use brivl_desktop::store::{Change, ModelId, Store};
use brivl_desktop::walk::walk;
use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::photo::PhotoLimits;
use brivl_engine::{checkpoint, convert, DType, Gpu};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Model bytes and album folder, and what they are.
fn inputs(scratch: &Path) -> (Vec<u8>, PathBuf, String) {
    let env_model = std::env::var_os("BRIVL_BENCH_MODEL").map(PathBuf::from);
    let env_album = std::env::var_os("BRIVL_BENCH_ALBUM").map(PathBuf::from);
    let (demo_model, demo_album) = (repo("www/models/brivl-demo-q8.safetensors"), repo("www/demo/album"));
    let (model, album) = match (env_model, env_album) {
        (Some(m), Some(a)) => (Some(m), Some(a)),
        _ if demo_model.is_file() && demo_album.is_dir() => (Some(demo_model), Some(demo_album)),
        _ => (None, None),
    };
    if let (Some(m), Some(a)) = (model, album) {
        let what = format!("model {}, album {}", m.display(), a.display());
        return (std::fs::read(&m).expect("read model"), a, what);
    }
    // The tiny fixture model (as tests/fixtures/tiny/README.md describes it) and made-up photos.
    let ckpt = std::fs::read(repo("tests/fixtures/tiny/brivl-tiny.pth")).expect("tiny checkpoint");
    let vocab = std::fs::read_to_string(repo("tests/fixtures/tokenizer/vocab.txt")).expect("vocab");
    let config = BrivlConfig { image_size: 200, img_heads: 2, text_heads: 2, bert_heads: 2, ..BrivlConfig::default() };
    let source = checkpoint::read_checkpoint(&ckpt).expect("read checkpoint");
    let model = convert::convert(&convert::state_dict(&source), &vocab, &config, DType::Q8).expect("convert").bytes;
    let album = scratch.join("album");
    std::fs::create_dir_all(&album).unwrap();
    for i in 0..48u32 {
        let img = image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x / 3 + i * 17) as u8, (y / 2 + i * 5) as u8, ((x ^ y) + i) as u8])
        });
        img.save(album.join(format!("photo_{i:02}.jpg"))).unwrap();
    }
    (model, album, "tiny fixture model (q8), 48 synthesized 640x480 JPEGs".into())
}

fn main() {
    let scratch = std::env::temp_dir().join(format!("brivl-bench-index-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (model_bytes, album, what) = inputs(&scratch);
    let file = ModelFile::parse(&model_bytes).expect("model file");
    let cpu = std::env::var("BRIVL_BENCH_BACKEND").is_ok_and(|b| b == "cpu");
    let gpu = if cpu { None } else { Some(pollster::block_on(Gpu::new()).expect("GPU adapter")) };
    let mut embedder = Embedder::load(&file, gpu.as_ref()).expect("load model");
    let model =
        ModelId { hash: file.content_hash.clone(), dim: brivl_engine::models::brivl::embedding_dim(&file).unwrap() };
    drop(file);
    let opts = IndexOptions::default();
    println!("{what}");
    println!("backend: {}; {} decode workers, batch {}", embedder.backend_name(), opts.workers, opts.batch);

    // Decoding alone, on the same number of threads as `brivl index`.
    let files = walk(std::slice::from_ref(&album)).expect("walk album").files;
    let limits = PhotoLimits::default();
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let decoded: Vec<Pixels> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while let Some(f) = files.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        if let Ok(p) = indexer::decode_pixels(&std::fs::read(&f.path).unwrap(), &limits) {
                            mine.push(p);
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let n = decoded.len();
    rate("decode only (read + decode)", n, t.elapsed().as_secs_f64());

    // Embedding alone: warm-up batch (pipelines compile on first use), then every photo.
    pollster::block_on(embedder.embed_images(&decoded[..opts.batch.min(n)])).expect("embed");
    let t = Instant::now();
    for chunk in decoded.chunks(opts.batch) {
        pollster::block_on(embedder.embed_images(chunk)).expect("embed");
    }
    rate("embed only (pixels ready)", n, t.elapsed().as_secs_f64());
    drop(decoded);

    // The whole pipeline into a fresh index.
    let db = scratch.join("album.sqlite");
    let mut store = Store::open_for_model(&db, &model, None).expect("open index");
    let plan = indexer::plan(&store, std::slice::from_ref(&album)).expect("plan");
    let t = Instant::now();
    let report = indexer::run(&mut store, &mut embedder, plan, &opts, &mut |_| {}).expect("index");
    rate("brivl index (decode + embed + store)", report.embedded, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let plan = indexer::plan(&store, std::slice::from_ref(&album)).expect("plan");
    let again = indexer::run(&mut store, &mut embedder, plan, &opts, &mut |_| {}).expect("index");
    println!(
        "{:<40} {:>9.1} ms for {} unchanged photos ({} embedded)",
        "brivl index again (nothing changed)",
        t.elapsed().as_secs_f64() * 1e3,
        again.unchanged,
        again.embedded
    );

    bench_search(&scratch, env_usize("BRIVL_BENCH_ROWS", 100_000), env_usize("BRIVL_BENCH_DIM", 2048));
    std::fs::remove_dir_all(&scratch).ok();
}

fn rate(what: &str, n: usize, secs: f64) {
    println!("{what:<40} {:>9.1} photos/s ({n} photos in {secs:.2} s)", n as f64 / secs);
}

/// A reproducible unit vector.
fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn bench_search(scratch: &Path, rows: usize, dim: usize) {
    println!("search: synthetic index of {rows} random {dim}-d embeddings");
    let db = scratch.join("synthetic.sqlite");
    let model = ModelId { hash: "5".repeat(64), dim };
    let mut store = Store::open_for_model(&db, &model, None).expect("open index");
    let mut vectors = Vec::with_capacity(rows);
    let t = Instant::now();
    for start in (0..rows).step_by(1000) {
        let changes: Vec<Change> = (start..(start + 1000).min(rows))
            .map(|i| {
                let v = unit(i as u64, dim);
                let change = Change::Photo {
                    path: format!("/photos/{:03}/{i:06}.jpg", i / 1000),
                    size: 1,
                    mtime_ns: 1,
                    hash: synthetic_hash(i),
                    embedding: to_f16_bytes(&v),
                };
                vectors.push(v);
                change
            })
            .collect();
        store.write(&changes).expect("write");
    }
    println!(
        "{:<40} {:>9.2} s ({:.0} rows/s)",
        "  write (1000 rows a transaction)",
        t.elapsed().as_secs_f64(),
        rows as f64 / t.elapsed().as_secs_f64()
    );
    drop(store);

    let t = Instant::now();
    let store = Store::open_existing(&db).expect("open");
    search::load_matrix(&store).expect("load");
    println!("{:<40} {:>9.1} ms", "  int8 matrix from SQLite (no cache)", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    search::open_matrix(&store).expect("load");
    println!("{:<40} {:>9.1} ms", "  same + write the matrix cache", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let store = Store::open_existing(&db).expect("open");
    let index = search::open_matrix(&store).expect("load");
    println!("{:<40} {:>9.1} ms", "  open index + matrix from cache", t.elapsed().as_secs_f64() * 1e3);

    let queries: Vec<Vec<f32>> = (0..20).map(|q| unit(10_000_000 + q, dim)).collect();
    let k = 20;
    search::search(&store, &index, &queries[0], k, None).expect("search"); // warm
    let t = Instant::now();
    let fast: Vec<Vec<search::Hit>> =
        queries.iter().map(|q| search::search(&store, &index, q, k, None).expect("search")).collect();
    let per_query = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    println!(
        "{:<40} {:>9.1} ms per query (top {k}, {} rescored)",
        "  int8 scan + exact rescoring",
        per_query,
        rescore_count(k)
    );

    let t = Instant::now();
    let exact: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let scores: Vec<f32> = vectors.iter().map(|v| v.iter().zip(q).map(|(a, b)| a * b).sum()).collect();
            let mut order: Vec<usize> = (0..rows).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            order.truncate(k);
            order
        })
        .collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    println!(
        "{:<40} {:>9.1} ms per query (single thread, f32 in memory)",
        "  exact f32 scan, for comparison", exact_ms
    );
    let mut found = 0;
    for (f, e) in fast.iter().zip(&exact) {
        let want: std::collections::HashSet<String> =
            e.iter().map(|&i| format!("/photos/{:03}/{i:06}.jpg", i / 1000)).collect();
        found += f.iter().filter(|h| want.contains(&h.path)).count();
    }
    println!("{:<40} {:>9.3}", "  recall of the exact top 20", found as f64 / (k * queries.len()) as f64);
}

/// Distinct 32-byte content hashes for synthetic rows (only their distinctness matters).
fn synthetic_hash(i: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(i as u64).to_le_bytes());
    h
}
