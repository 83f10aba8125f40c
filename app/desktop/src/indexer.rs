//! `brivl index`: bring the index up to date with the folders. Photos are read, hashed and decoded
//! on worker threads while the calling thread runs the model, and each batch is committed in one
//! transaction, so an interrupted run keeps everything embedded so far.
//!
//! What happens to each file (size and modification time decide "unchanged"):
//! - unchanged since it was indexed, or since it failed: not read again;
//! - new or changed: read and hashed; if a photo with the same content hash is in the index
//!   (a renamed, moved or copied photo, or a touched one) its embedding is reused, otherwise the
//!   photo is decoded and embedded;
//! - gone from a folder being indexed: dropped at the end of the run (after renames had their
//!   chance to reuse its embedding). Paths outside the folders given are left alone.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use brivl_core::encoding::to_f16_bytes;
use brivl_engine::embedder::{Embedder, Pixels, Submitted};
use brivl_engine::photo::{self, PhotoLimits};

use crate::store::{Change, Store, StoredFailure};
use crate::walk::{is_under, walk, FoundFile};
use crate::DesktopError;

/// A file that could not be indexed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

/// What a run will do, worked out from the walk and the index before anything is read.
pub struct Plan {
    /// New or changed files, to read.
    pub todo: Vec<FoundFile>,
    pub unchanged: usize,
    /// Indexed paths under the folders that are gone.
    pub removed: Vec<String>,
    /// Unchanged files that failed before (not read again) and paths the walk could not use.
    pub known_failures: Vec<Failure>,
    /// Unchanged files known not to be photos (not read again).
    pub not_photos: usize,
    known_hashes: HashSet<[u8; 32]>,
}

/// Walks `roots` and compares what it finds with the index.
pub fn plan(store: &Store, roots: &[PathBuf]) -> Result<Plan, DesktopError> {
    let walked = walk(roots).map_err(DesktopError::Io)?;
    let photos = store.photos()?;
    let failures = store.failures()?;
    let indexed: HashMap<&str, (u64, i64)> = photos.iter().map(|p| (p.path.as_str(), (p.size, p.mtime_ns))).collect();
    let failed: HashMap<&str, &StoredFailure> = failures.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut todo = Vec::new();
    let mut unchanged = 0;
    let mut not_photos = 0;
    let mut known_failures: Vec<Failure> =
        walked.problems.into_iter().map(|p| Failure { path: p.path, error: p.error }).collect();
    let walked_paths: HashSet<String> = walked.files.iter().map(|f| f.path.clone()).collect();
    for f in walked.files {
        let stamp = (f.size, f.mtime_ns);
        if indexed.get(f.path.as_str()) == Some(&stamp) {
            unchanged += 1;
        } else if let Some(old) = failed.get(f.path.as_str()).filter(|o| (o.size, o.mtime_ns) == stamp) {
            if old.error == NOT_PHOTO {
                not_photos += 1;
            } else {
                known_failures.push(Failure { path: f.path, error: old.error.clone() });
            }
        } else {
            todo.push(f);
        }
    }
    // Only paths that are really gone: a folder that could not be listed this time keeps its photos.
    let under_roots = |p: &str| walked.roots.iter().any(|r| is_under(p, r));
    let removed = photos
        .iter()
        .map(|p| p.path.as_str())
        .chain(failures.iter().map(|f| f.path.as_str()))
        // `try_exists` errs (and the photo stays) when a folder above cannot be read.
        .filter(|p| {
            under_roots(p) && !walked_paths.contains(*p) && matches!(std::path::Path::new(p).try_exists(), Ok(false))
        })
        .map(str::to_string)
        .collect();
    Ok(Plan {
        todo,
        unchanged,
        removed,
        known_failures,
        not_photos,
        known_hashes: photos.iter().map(|p| p.hash).collect(),
    })
}

/// Tuning of [`run`].
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Photos per forward pass.
    pub batch: usize,
    /// Decoding threads.
    pub workers: usize,
    pub limits: PhotoLimits,
    /// Larger files are not read (listed as failures when they look like photos).
    pub max_file_bytes: u64,
    /// Bytes of files and decoded pixels in flight between the readers and the model. One photo
    /// larger than this still goes through, alone.
    pub memory_budget: u64,
}

/// The default of [`IndexOptions::max_file_bytes`], as in the web app.
pub const MAX_FILE_BYTES: u64 = 200 << 20;
/// The default of [`IndexOptions::memory_budget`].
pub const MEMORY_BUDGET: u64 = 1 << 30;

impl Default for IndexOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            batch: 8,
            workers: cores.clamp(1, 8),
            limits: PhotoLimits::default(),
            max_file_bytes: MAX_FILE_BYTES,
            memory_budget: MEMORY_BUDGET,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Photos decoded and run through the model.
    pub embedded: usize,
    /// New or changed files whose content was already indexed (renamed, moved, copied, touched).
    pub reused: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Sorted by path: this run's failures and the unchanged ones from before.
    pub failures: Vec<Failure>,
    /// Files that are not photos at all (videos, documents): counted, not read, not failures.
    pub not_photos: usize,
    /// Photos in the index after the run.
    pub photos: usize,
}

/// A file after a worker had it.
enum Read<'a> {
    /// The ticket holds the photo's bytes in the memory budget until it is embedded.
    Decoded(FoundFile, [u8; 32], Pixels, Ticket<'a>),
    /// Its content hash is already in the index: nothing to decode.
    Known(FoundFile, [u8; 32]),
    Failed(FoundFile, String),
    NotPhoto(FoundFile),
}

/// What the failures table records for a file that is not a photo, so that it is not read again
/// while unchanged (and never listed as a failure).
const NOT_PHOTO: &str = "not a photo";

/// Bytes in flight (files being read, decoded pixels waiting for the model), bounded: a reader
/// waits while taking its photo would pass the limit, unless nothing else is in flight.
struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A share of the [`Budget`], given back when dropped.
struct Ticket<'a> {
    budget: Option<&'a Budget>,
    bytes: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Self { limit, used: Mutex::new(0), freed: Condvar::new() }
    }

    fn take(&self, bytes: u64) -> Ticket<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && used.saturating_add(bytes) > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        Ticket { budget: Some(self), bytes }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            *b.used.lock().unwrap_or_else(|e| e.into_inner()) -= self.bytes;
            b.freed.notify_all();
        }
    }
}

/// The model's image side as the indexer drives it: a batch is submitted, the next one gathered
/// and submitted, and only then is the first finished, so the device does not wait for the host
/// between batches. Embeddings are L2-normalised, one per photo, in order.
pub trait PhotoEmbedder {
    type Submitted;
    fn submit(&mut self, photos: &[Pixels]) -> brivl_engine::Result<Self::Submitted>;
    fn finish(&mut self, batch: Self::Submitted) -> brivl_engine::Result<Vec<Vec<f32>>>;
}

impl PhotoEmbedder for Embedder {
    type Submitted = Submitted;
    fn submit(&mut self, photos: &[Pixels]) -> brivl_engine::Result<Submitted> {
        self.submit_images(photos)
    }
    fn finish(&mut self, batch: Submitted) -> brivl_engine::Result<Vec<Vec<f32>>> {
        pollster::block_on(Embedder::finish(self, batch))
    }
}

/// A function that embeds a whole batch when called (benchmarks, or no model): no overlap.
pub struct EachBatch<F>(pub F);

impl<F: FnMut(&[Pixels]) -> brivl_engine::Result<Vec<Vec<f32>>>> PhotoEmbedder for EachBatch<F> {
    type Submitted = brivl_engine::Result<Vec<Vec<f32>>>;
    fn submit(&mut self, photos: &[Pixels]) -> brivl_engine::Result<Self::Submitted> {
        Ok((self.0)(photos))
    }
    fn finish(&mut self, batch: Self::Submitted) -> brivl_engine::Result<Vec<Vec<f32>>> {
        batch
    }
}

/// Photos gathered for one pass of the model, and what else their files gave.
struct Batch<'a, S> {
    /// Each photo's file, content hash and share of the memory budget (held until finished).
    files: Vec<(FoundFile, [u8; 32], Ticket<'a>)>,
    pixels: Vec<Pixels>,
    /// Changes for the files of this batch that needed no model.
    changes: Vec<Change>,
    /// Files of `plan.todo` this batch accounts for.
    files_done: usize,
    /// `None` when no photo of the batch needs the model.
    submitted: Option<brivl_engine::Result<S>>,
}

impl<'a, S> Batch<'a, S> {
    fn add(&mut self, file: FoundFile, hash: [u8; 32], pixels: Pixels, ticket: Ticket<'a>) {
        self.files.push((file, hash, ticket));
        self.pixels.push(pixels);
    }
}

/// Carries out `plan`: reads and decodes `plan.todo` on `opts.workers` threads, embeds on this
/// thread in batches (one batch on the device while the next is gathered), commits each batch,
/// then drops the removed paths. `progress` is called with the number of files of `plan.todo`
/// done so far.
pub fn run<E: PhotoEmbedder>(
    store: &mut Store,
    embedder: &mut E,
    plan: Plan,
    opts: &IndexOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Report, DesktopError> {
    let mut report = Report {
        unchanged: plan.unchanged,
        removed: plan.removed.len(),
        failures: plan.known_failures,
        not_photos: plan.not_photos,
        ..Report::default()
    };
    let batch = opts.batch.max(1);
    let next = AtomicUsize::new(0);
    let todo = &plan.todo;
    let known = &plan.known_hashes;
    let budget = &Budget::new(opts.memory_budget);
    std::thread::scope(|scope| -> Result<(), DesktopError> {
        // Bounded: decoded photos can be large, so workers wait rather than pile them up.
        let (tx, rx) = mpsc::sync_channel::<Read>(batch);
        for _ in 0..opts.workers.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = todo.get(i) else { break };
                if tx.send(read_file(file.clone(), known, opts, Some(budget))).is_err() {
                    break; // the embedding side stopped on an error
                }
            });
        }
        drop(tx);
        let mut done = 0;
        let mut in_flight: Option<Batch<E::Submitted>> = None;
        loop {
            let first = match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    // Nothing decoded yet: finish the batch on the device first. Its photos hold
                    // budget that the readers may be waiting for.
                    if let Some(b) = in_flight.take() {
                        done += finish(store, embedder, b, &mut report)?;
                        progress(done);
                    }
                    match rx.recv() {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
            };
            let mut gathered =
                Batch { files: Vec::new(), pixels: Vec::new(), changes: Vec::new(), files_done: 0, submitted: None };
            gather(store, opts, &mut report, &mut gathered, first)?;
            while gathered.pixels.len() < batch {
                let Ok(r) = rx.try_recv() else { break };
                gather(store, opts, &mut report, &mut gathered, r)?;
            }
            if !gathered.pixels.is_empty() {
                gathered.submitted = Some(embedder.submit(&gathered.pixels));
            }
            if let Some(b) = in_flight.replace(gathered) {
                done += finish(store, embedder, b, &mut report)?;
                progress(done);
            }
        }
        if let Some(b) = in_flight.take() {
            done += finish(store, embedder, b, &mut report)?;
            progress(done);
        }
        Ok(())
    })?;
    let removals: Vec<Change> = plan.removed.into_iter().map(|path| Change::Remove { path }).collect();
    store.write(&removals)?;
    report.failures.sort_by(|a, b| a.path.cmp(&b.path));
    report.photos = store.photo_count()?;
    Ok(report)
}

/// Adds what a reader gave for one file to the batch being gathered.
fn gather<'a, S>(
    store: &Store,
    opts: &IndexOptions,
    report: &mut Report,
    b: &mut Batch<'a, S>,
    r: Read<'a>,
) -> Result<(), DesktopError> {
    b.files_done += 1;
    match r {
        Read::Decoded(f, h, p, t) => b.add(f, h, p, t),
        Read::NotPhoto(f) => b.changes.push(not_photo_change(f, &mut report.not_photos)),
        Read::Known(f, h) => match store.embedding_by_hash(&h)? {
            Some(embedding) => {
                report.reused += 1;
                b.changes.push(photo_change(f, h, embedding));
            }
            // The row with that content changed earlier in this run: decode after all
            // (outside the budget: this thread is the one that frees it).
            None => match read_file(f, &HashSet::new(), opts, None) {
                Read::Decoded(f, h, p, t) => b.add(f, h, p, t),
                Read::Failed(f, e) => b.changes.push(failure_change(f, e, &mut report.failures)),
                Read::NotPhoto(f) => b.changes.push(not_photo_change(f, &mut report.not_photos)),
                Read::Known(f, _) => {
                    b.changes.push(failure_change(f, "the file changed while indexing".into(), &mut report.failures))
                }
            },
        },
        Read::Failed(f, e) => b.changes.push(failure_change(f, e, &mut report.failures)),
    }
    Ok(())
}

/// Reads a batch's embeddings, records them with the batch's other changes in one transaction,
/// and returns the files it accounts for. A batch the device refuses or fails is embedded again
/// one photo at a time, so one photo the device cannot take (say, too large for a buffer) does
/// not sink its batch. A photo that fails alone is reported but not recorded: the cause may be
/// the device, not the file.
fn finish<E: PhotoEmbedder>(
    store: &mut Store,
    embedder: &mut E,
    batch: Batch<E::Submitted>,
    report: &mut Report,
) -> Result<usize, DesktopError> {
    let Batch { files, pixels, mut changes, files_done, submitted } = batch;
    if let Some(submitted) = submitted {
        let dim = store.model.dim;
        let embeddings: Vec<brivl_engine::Result<Vec<f32>>> = match submitted.and_then(|s| embedder.finish(s)) {
            Ok(e) if e.len() == pixels.len() => e.into_iter().map(Ok).collect(),
            Ok(e) => {
                return Err(DesktopError::Io(format!(
                    "the model gave {} embeddings for {} photos",
                    e.len(),
                    pixels.len()
                )))
            }
            Err(_) if pixels.len() > 1 => pixels
                .chunks(1)
                .map(|one| embedder.submit(one).and_then(|s| embedder.finish(s)).and_then(|e| first(e, "photo")))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        // The tickets go when this batch is recorded.
        for ((file, hash, _ticket), e) in files.into_iter().zip(embeddings) {
            match e {
                Ok(e) if e.len() == dim => {
                    changes.push(photo_change(file, hash, to_f16_bytes(&e)));
                    report.embedded += 1;
                }
                // The index refuses other models, so this is a bug, not bad input.
                Ok(e) => {
                    return Err(DesktopError::Io(format!(
                        "the model gave a {}-d embedding, the index holds {dim}-d",
                        e.len()
                    )))
                }
                Err(e) => report.failures.push(Failure { path: file.path, error: format!("embedding failed: {e}") }),
            }
        }
    }
    store.write(&changes)?;
    Ok(files_done)
}

fn first(mut e: Vec<Vec<f32>>, what: &str) -> brivl_engine::Result<Vec<f32>> {
    if e.is_empty() {
        return Err(brivl_engine::Error::Model(format!("no embedding for the {what}")));
    }
    Ok(e.swap_remove(0))
}

fn photo_change(f: FoundFile, hash: [u8; 32], embedding: Vec<u8>) -> Change {
    Change::Photo { path: f.path, size: f.size, mtime_ns: f.mtime_ns, hash, embedding }
}

fn not_photo_change(f: FoundFile, not_photos: &mut usize) -> Change {
    *not_photos += 1;
    Change::Failure(StoredFailure { path: f.path, size: f.size, mtime_ns: f.mtime_ns, error: NOT_PHOTO.into() })
}

fn failure_change(f: FoundFile, error: String, failures: &mut Vec<Failure>) -> Change {
    failures.push(Failure { path: f.path.clone(), error: error.clone() });
    Change::Failure(StoredFailure { path: f.path, size: f.size, mtime_ns: f.mtime_ns, error })
}

/// Bytes of decoding a photo of `pixels` pixels holds at once: RGB8 from the decoder and the
/// packed RGBA the model takes.
const BYTES_PER_PIXEL: u64 = 3 + 4;

/// How much of a file the header probe reads (EXIF comes before a JPEG's size).
const HEAD_BYTES: u64 = 256 << 10;

/// Reads, hashes and (unless the hash is in `known`) decodes one file. The first bytes decide
/// whether it is a photo at all, and the header its decoded size, before the file is read whole
/// within `budget`.
fn read_file<'a>(
    file: FoundFile,
    known: &HashSet<[u8; 32]>,
    opts: &IndexOptions,
    budget: Option<&'a Budget>,
) -> Read<'a> {
    let mut f = match std::fs::File::open(&file.path) {
        Ok(f) => f,
        Err(e) => return Read::Failed(file, format!("cannot read: {e}")),
    };
    let mut head = Vec::new();
    if let Err(e) = (&mut f).take(HEAD_BYTES).read_to_end(&mut head) {
        return Read::Failed(file, format!("cannot read: {e}"));
    }
    if !photo::looks_like_photo(&head[..head.len().min(photo::SNIFF_BYTES)]) {
        return Read::NotPhoto(file);
    }
    if file.size > opts.max_file_bytes {
        let why = format!(
            "{:.0} MB is over the {:.0} MB limit (--max-file-mb)",
            file.size as f64 / 1e6,
            opts.max_file_bytes as f64 / 1e6
        );
        return Read::Failed(file, why);
    }
    // A header that cannot be read from the first bytes (a TIFF with its directory at the end)
    // is charged as the largest photo the limits allow.
    let pixels = match photo::probe(&head, &opts.limits) {
        Ok(info) => info.width as u64 * info.height as u64,
        Err(photo::PhotoError::TooLarge { .. }) if (head.len() as u64) < file.size => opts.limits.max_pixels,
        Err(e @ photo::PhotoError::TooLarge { .. }) => return Read::Failed(file, e.to_string()),
        Err(_) => opts.limits.max_pixels,
    };
    let cost = file.size.saturating_add(pixels.saturating_mul(BYTES_PER_PIXEL));
    let ticket = match budget {
        Some(b) => b.take(cost),
        None => Ticket { budget: None, bytes: 0 },
    };
    let mut bytes = head;
    if let Err(e) = f.read_to_end(&mut bytes) {
        return Read::Failed(file, format!("cannot read: {e}"));
    }
    let hash = content_hash(&bytes);
    if known.contains(&hash) {
        return Read::Known(file, hash);
    }
    match decode_pixels(&bytes, &opts.limits) {
        Ok(p) => Read::Decoded(file, hash, p, ticket),
        Err(e) => Read::Failed(file, e),
    }
}

/// What the index keys a photo's content by: SHA-256 of the file's bytes.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Photo bytes -> the pixels the image tower takes.
pub fn decode_pixels(bytes: &[u8], limits: &PhotoLimits) -> Result<Pixels, String> {
    let img = photo::decode_with_limits(bytes, limits).map_err(|e| e.to_string())?;
    Ok(Pixels { width: img.width as usize, height: img.height as usize, rgba: img.pack_rgba_u32() })
}
