//! The photo index: one SQLite file holding, per photo, its path, size, modification time,
//! content hash and embedding, plus the hash of the model that made the embeddings.
//!
//! Durability: the database runs in WAL mode and every batch is one transaction, so a killed
//! `brivl index` loses at most the batch in flight and the next run continues from the rest.
//! Embeddings are stored as little-endian f16 (`brivl_core::encoding`).

use std::path::{Path, PathBuf};

use brivl_core::encoding::from_f16_bytes;
pub use brivl_core::model_id::ModelId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::DesktopError;

/// Bumped when the tables change; an index of another version is refused with the reason.
const SCHEMA_VERSION: &str = "1";

/// The widest embedding an index may declare (BriVL's is 2048).
const MAX_DIM: usize = 65_536;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash BLOB NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_by_hash ON photos (hash);
CREATE TABLE IF NOT EXISTS failures (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    error TEXT NOT NULL
) WITHOUT ROWID;
";

/// A photo row without its embedding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPhoto {
    pub id: i64,
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: [u8; 32],
}

/// A file that could not be indexed, kept so an unchanged one is not read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFailure {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub error: String,
}

/// One change written by [`Store::write`].
pub enum Change {
    /// Insert or replace the photo at `path` (and forget any failure recorded there).
    Photo { path: String, size: u64, mtime_ns: i64, hash: [u8; 32], embedding: Vec<u8> },
    /// Record that `path` could not be read (and drop any photo indexed there).
    Failure(StoredFailure),
    /// The file is gone: drop its photo or failure.
    Remove { path: String },
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    pub model: ModelId,
}

impl Store {
    /// Opens the index at `path` for `model`, creating it (and its folder) when absent. An index
    /// made with another model is refused with [`DesktopError::OtherModel`]. The check and, for a
    /// new index, the schema and the model binding are one write transaction: two first runs with
    /// different models cannot both bind it, and a kill leaves either nothing or a whole index.
    pub fn open_for_model(path: &Path, model: &ModelId, model_path: Option<&Path>) -> Result<Self, DesktopError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DesktopError::Io(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = connect(path)?;
        let db = |e| db_error(path, e);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
        match read_model(&tx, path)? {
            Some(have) => {
                have.accepts(model)
                    .map_err(|source| DesktopError::OtherModel { index: path.display().to_string(), source })?;
            }
            None => {
                tx.execute_batch(SCHEMA).map_err(db)?;
                for (k, v) in [
                    ("schema", SCHEMA_VERSION.to_string()),
                    ("model_hash", model.hash.clone()),
                    ("dim", model.dim.to_string()),
                    ("generation", "0".to_string()),
                    ("index_id", new_index_id()),
                ] {
                    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![k, v])
                        .map_err(db)?;
                }
            }
        }
        if let Some(m) = model_path.and_then(|m| std::path::absolute(m).ok()) {
            // Remembered so `brivl search` can find the model without `--model`.
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('model_path', ?1)",
                params![m.to_string_lossy()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        // Only now that the file is known to be a brivl index: WAL + NORMAL, so a killed process
        // loses no committed transaction (only a power cut can lose the last few) and commits
        // need no fsync each.
        set_wal(&conn).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        Ok(Self { conn, path: path.to_path_buf(), model: model.clone() })
    }

    /// Opens an existing index, whatever its model.
    pub fn open_existing(path: &Path) -> Result<Self, DesktopError> {
        if !path.is_file() {
            return Err(DesktopError::NoIndex(path.display().to_string()));
        }
        let conn = connect(path)?;
        let model = read_model(&conn, path)?.ok_or_else(|| DesktopError::NoIndex(path.display().to_string()))?;
        Ok(Self { conn, path: path.to_path_buf(), model })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model file last used to index, if recorded.
    pub fn model_path(&self) -> Result<Option<PathBuf>, DesktopError> {
        self.meta("model_path").map(|v| v.map(PathBuf::from))
    }

    fn meta(&self, key: &str) -> Result<Option<String>, DesktopError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| db_error(&self.path, e))
    }

    /// A token that changes with every [`Store::write`] and differs between two index files made
    /// at the same path: what derived data (the search matrix cache) checks to know it is stale.
    pub fn stamp(&self) -> Result<String, DesktopError> {
        let id = self.meta("index_id")?.unwrap_or_default();
        let generation = self.meta("generation")?.unwrap_or_default();
        Ok(format!("{id}/{generation}"))
    }

    pub fn photo_count(&self) -> Result<usize, DesktopError> {
        self.conn
            .query_row("SELECT count(*) FROM photos", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| db_error(&self.path, e))
    }

    /// Every photo row, without embeddings.
    pub fn photos(&self) -> Result<Vec<StoredPhoto>, DesktopError> {
        let db = |e| db_error(&self.path, e);
        let mut st =
            self.conn.prepare("SELECT id, path, size, mtime_ns, hash FROM photos ORDER BY path").map_err(db)?;
        let rows = st
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(4)?;
                Ok(StoredPhoto {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    mtime_ns: r.get(3)?,
                    hash: hash.try_into().unwrap_or([0; 32]),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    pub fn failures(&self) -> Result<Vec<StoredFailure>, DesktopError> {
        let db = |e| db_error(&self.path, e);
        let mut st = self.conn.prepare("SELECT path, size, mtime_ns, error FROM failures ORDER BY path").map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok(StoredFailure {
                    path: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    error: r.get(3)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// The stored embedding (f16 bytes) of any photo with this content hash.
    pub fn embedding_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, DesktopError> {
        self.conn
            .prepare_cached("SELECT embedding FROM photos WHERE hash = ?1 LIMIT 1")
            .and_then(|mut st| st.query_row([&hash[..]], |r| r.get(0)).optional())
            .map_err(|e| db_error(&self.path, e))
    }

    /// Path and embedding of the photo with this row id.
    pub fn photo_embedding(&self, id: i64) -> Result<Option<(String, Vec<f32>)>, DesktopError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT path, embedding FROM photos WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(|e| db_error(&self.path, e))?;
        row.map(|(p, e)| Ok((p, self.decode(id, &e)?))).transpose()
    }

    /// Stored f16 bytes -> the embedding, refused when it is not of the index's width.
    pub fn decode(&self, id: i64, bytes: &[u8]) -> Result<Vec<f32>, DesktopError> {
        from_f16_bytes(bytes).filter(|e| e.len() == self.model.dim).ok_or_else(|| {
            DesktopError::NotAnIndex(
                self.path.display().to_string(),
                format!("photo row {id} has an embedding of the wrong width (expected {})", self.model.dim),
            )
        })
    }

    /// Calls `f(id, embedding)` for every photo, in row order, with the f16 bytes as stored.
    pub fn for_each_embedding(&self, mut f: impl FnMut(i64, &[u8])) -> Result<(), DesktopError> {
        let db = |e| db_error(&self.path, e);
        let mut st = self.conn.prepare("SELECT id, embedding FROM photos ORDER BY id").map_err(db)?;
        let mut rows = st.query([]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let id: i64 = r.get(0).map_err(db)?;
            let bytes = r
                .get_ref(1)
                .map_err(db)?
                .as_blob()
                .map_err(|e| DesktopError::Database(format!("{}: photo row {id}: {e}", self.path.display())))?;
            f(id, bytes);
        }
        Ok(())
    }

    /// Applies `changes` in one transaction: all of them or, if the process dies, none.
    pub fn write(&mut self, changes: &[Change]) -> Result<(), DesktopError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let db = |e| db_error(&path, e);
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO photos (path, size, mtime_ns, hash, embedding) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                     hash = excluded.hash, embedding = excluded.embedding",
                )
                .map_err(db)?;
            let mut fail = tx
                .prepare_cached("INSERT OR REPLACE INTO failures (path, size, mtime_ns, error) VALUES (?1, ?2, ?3, ?4)")
                .map_err(db)?;
            let mut drop_photo = tx.prepare_cached("DELETE FROM photos WHERE path = ?1").map_err(db)?;
            let mut drop_failure = tx.prepare_cached("DELETE FROM failures WHERE path = ?1").map_err(db)?;
            for c in changes {
                match c {
                    Change::Photo { path, size, mtime_ns, hash, embedding } => {
                        put.execute(params![path, *size as i64, mtime_ns, &hash[..], embedding]).map_err(db)?;
                        drop_failure.execute([path]).map_err(db)?;
                    }
                    Change::Failure(f) => {
                        fail.execute(params![f.path, f.size as i64, f.mtime_ns, f.error]).map_err(db)?;
                        drop_photo.execute([&f.path]).map_err(db)?;
                    }
                    Change::Remove { path } => {
                        drop_photo.execute([path]).map_err(db)?;
                        drop_failure.execute([path]).map_err(db)?;
                    }
                }
            }
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'", [])
                .map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}

/// Different for every index created (clock and process id; no randomness needed).
fn new_index_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// How long a brivl process waits for another one holding the index.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn connect(path: &Path) -> Result<Connection, DesktopError> {
    let db = |e| db_error(path, e);
    let conn = Connection::open(path).map_err(db)?;
    // Another brivl process (a search during an index run) waits instead of failing at once.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    Ok(conn)
}

/// Switches the index to WAL. SQLite answers "database is locked" at once, without waiting in the
/// busy handler, while another connection holds the file during its own switch (two first runs at
/// once), so that case is retried here for as long as the busy timeout.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

/// The model recorded in the index, `None` for a new (empty) database; refuses a file that is
/// not a brivl index or has another schema version.
fn read_model(conn: &Connection, path: &Path) -> Result<Option<ModelId>, DesktopError> {
    let db = |e| db_error(path, e);
    let has_meta: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(db)?
        > 0;
    if !has_meta {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(db)?;
        if tables > 0 {
            return Err(DesktopError::NotAnIndex(path.display().to_string(), "it has no brivl meta table".into()));
        }
        return Ok(None);
    }
    let get = |k: &str| -> Result<Option<String>, DesktopError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).optional().map_err(db)
    };
    match get("schema")?.as_deref() {
        Some(SCHEMA_VERSION) => {}
        other => {
            return Err(DesktopError::NotAnIndex(
                path.display().to_string(),
                format!("schema version {} (this brivl reads {SCHEMA_VERSION})", other.unwrap_or("missing")),
            ))
        }
    }
    model_from_meta(get("model_hash")?.as_deref(), get("dim")?.as_deref()).map(Some).ok_or_else(|| {
        DesktopError::NotAnIndex(
            path.display().to_string(),
            format!("its model hash (64 hex digits) or embedding width (1..={MAX_DIM}) is missing or malformed"),
        )
    })
}

/// The model an index's metadata names, validated, so nothing later slices a corrupt hash or
/// allocates by an absurd width.
pub fn model_from_meta(hash: Option<&str>, dim: Option<&str>) -> Option<ModelId> {
    let hash = hash.filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let dim = dim.and_then(|d| d.parse().ok()).filter(|d| (1..=MAX_DIM).contains(d))?;
    Some(ModelId { hash: hash.to_string(), dim })
}

fn db_error(path: &Path, e: rusqlite::Error) -> DesktopError {
    // "file is not a database" and friends say it well enough with the path in front.
    DesktopError::Database(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brivl_core::encoding::to_f16_bytes;
    use half::f16;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("brivl-store-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir.join("sub/index.sqlite")
    }

    fn photo(path: &str, byte: u8) -> Change {
        Change::Photo {
            path: path.into(),
            size: 10,
            mtime_ns: 7,
            hash: [byte; 32],
            embedding: to_f16_bytes(&[0.6, -0.8, byte as f32]),
        }
    }

    #[test]
    fn store_round_trip_and_model_check() {
        let path = temp("rt");
        let model = ModelId { hash: "abc".repeat(21) + "d", dim: 3 };
        let mut s = Store::open_for_model(&path, &model, Some(Path::new("m.safetensors"))).unwrap();
        s.write(&[photo("/a.jpg", 1), photo("/b.jpg", 2)]).unwrap();
        s.write(&[
            photo("/a.jpg", 3), // replaced in place: still one row
            Change::Failure(StoredFailure { path: "/b.jpg".into(), size: 1, mtime_ns: 2, error: "bad".into() }),
            Change::Failure(StoredFailure { path: "/c.jpg".into(), size: 1, mtime_ns: 2, error: "worse".into() }),
        ])
        .unwrap();
        let photos = s.photos().unwrap();
        assert_eq!(photos.len(), 1);
        assert_eq!((photos[0].path.as_str(), photos[0].hash), ("/a.jpg", [3; 32]));
        assert_eq!(s.failures().unwrap().iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/b.jpg", "/c.jpg"]);
        assert_eq!(
            from_f16_bytes(&s.embedding_by_hash(&[3; 32]).unwrap().unwrap()).unwrap(),
            [0.6f32, -0.8, 3.0].map(|v| f16::from_f32(v).to_f32())
        );
        assert!(s.embedding_by_hash(&[1; 32]).unwrap().is_none());
        s.write(&[Change::Remove { path: "/c.jpg".into() }, photo("/b.jpg", 4)]).unwrap();
        assert_eq!(s.failures().unwrap().len(), 0, "a photo replaces the failure at its path");
        drop(s);

        // Reopened: same rows, the model path is remembered, another model is refused.
        let s = Store::open_existing(&path).unwrap();
        assert_eq!(s.model, model);
        let stamp = s.stamp().unwrap();
        assert!(stamp.ends_with("/3"), "one generation per write: {stamp}");
        assert_eq!(s.photo_count().unwrap(), 2);
        assert!(s.model_path().unwrap().unwrap().ends_with("m.safetensors"));
        let mut seen = Vec::new();
        s.for_each_embedding(|id, e| seen.push((id, e.len()))).unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|&(_, n)| n == 6));
        drop(s);
        let other = ModelId { hash: "def".repeat(21) + "0", dim: 3 };
        match Store::open_for_model(&path, &other, None) {
            Err(e @ DesktopError::OtherModel { .. }) => assert!(e.to_string().contains("abc"), "{e}"),
            other => panic!("expected OtherModel, got {:?}", other.err()),
        }
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
    }

    #[test]
    fn store_refuses_what_is_not_an_index() {
        let path = temp("bad");
        assert!(matches!(Store::open_existing(&path), Err(DesktopError::NoIndex(_))));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let model = ModelId { hash: "abc".repeat(21) + "d", dim: 3 };
        let e = Store::open_for_model(&path, &model, None).err().expect("garbage is refused");
        assert!(e.to_string().contains("not a database"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let e = Store::open_for_model(&path, &model, None).err().expect("another database is refused");
        assert!(e.to_string().contains("not a brivl index"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "another program's database is left untouched");
        assert!(!path.with_extension("sqlite-wal").exists(), "and not switched to WAL");
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
    }

    #[test]
    fn store_validates_its_metadata() {
        let model = ModelId { hash: "0f".repeat(32), dim: 3 };
        for (i, (key, value, what)) in [
            ("model_hash", "é".repeat(32), "model hash"),
            ("model_hash", "abc".into(), "model hash"),
            ("dim", "99999999999".into(), "embedding width"),
            ("dim", "0".into(), "embedding width"),
        ]
        .into_iter()
        .enumerate()
        {
            let path = temp(&format!("meta{i}"));
            drop(Store::open_for_model(&path, &model, None).unwrap());
            let conn = Connection::open(&path).unwrap();
            conn.execute("UPDATE meta SET value = ?1 WHERE key = ?2", params![value, key]).unwrap();
            drop(conn);
            let e = Store::open_existing(&path).err().expect("corrupt metadata is refused");
            assert!(e.to_string().contains("not a brivl index") && e.to_string().contains(what), "{e}");
            std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
        }
    }

    #[test]
    fn store_first_runs_of_two_models_cannot_both_bind() {
        // Many threads race to create one index with two models: exactly one model wins, and
        // every open with the other is refused.
        let path = temp("race");
        let a = ModelId { hash: "a".repeat(64), dim: 3 };
        let b = ModelId { hash: "b".repeat(64), dim: 3 };
        let results: Vec<(bool, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (path, m) = (&path, if i % 2 == 0 { &a } else { &b });
                    s.spawn(move || (i % 2 == 0, Store::open_for_model(path, m, None).is_ok()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winner = Store::open_existing(&path).unwrap().model;
        for (is_a, ok) in results {
            assert_eq!(ok, (winner == a) == is_a, "only the bound model opens");
        }
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
    }
}
