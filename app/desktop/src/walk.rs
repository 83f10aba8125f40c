//! Finding the files to index: every regular file under the given folders, with the size and
//! modification time that decide whether an indexed file changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A file found by [`walk`]: its absolute path as UTF-8 and what `stat` says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i64,
}

/// A path that could not be listed or named; it is reported, never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkProblem {
    pub path: String,
    pub error: String,
}

/// Everything [`walk`] found under its roots.
#[derive(Debug, Default)]
pub struct Walked {
    /// Sorted by path, each file once even when roots overlap.
    pub files: Vec<FoundFile>,
    /// The roots as absolute paths (what "under the folders indexed" means for deletions).
    pub roots: Vec<String>,
    pub problems: Vec<WalkProblem>,
}

/// Walks `roots` recursively. A root may also be a single file. Hidden entries (names starting
/// with `.`, e.g. `.DS_Store`, `.thumbnails`) are skipped, and symbolic links to folders are not
/// followed (a link cycle would never end); links to files are indexed under the link's path.
/// A root that does not exist is an error; an unreadable folder or a path that is not UTF-8
/// below a root is a [`WalkProblem`] and the walk goes on.
pub fn walk(roots: &[PathBuf]) -> Result<Walked, String> {
    let mut files = BTreeMap::new();
    let mut out = Walked::default();
    for root in roots {
        let abs = absolute(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let meta = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", root.display()))?;
        let name = abs.to_str().ok_or_else(|| format!("{}: the path is not valid UTF-8", abs.display()))?;
        out.roots.push(name.to_string());
        if meta.is_file() {
            files.insert(name.to_string(), found(name.to_string(), &meta));
            continue;
        }
        let mut stack = vec![abs];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    out.problems.push(problem(&dir, format!("cannot list the folder: {e}")));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        out.problems.push(problem(&dir, format!("cannot list the folder: {e}")));
                        continue;
                    }
                };
                if entry.file_name().as_encoded_bytes().starts_with(b".") {
                    continue;
                }
                let path = entry.path();
                let Some(name) = path.to_str() else {
                    out.problems.push(problem(&path, "the path is not valid UTF-8".into()));
                    continue;
                };
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                // `metadata` follows a link to a file; a dangling link is reported.
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        files.insert(name.to_string(), found(name.to_string(), &m));
                    }
                    Ok(_) => {}
                    Err(e) => out.problems.push(problem(&path, e.to_string())),
                }
            }
        }
    }
    out.files = files.into_values().collect();
    Ok(out)
}

/// The root as stored: links and `..` resolved, so the same folder is always the same prefix.
/// (On Windows `canonicalize` gives `\\?\` paths, so there it is only made absolute.)
fn absolute(root: &Path) -> std::io::Result<PathBuf> {
    if cfg!(windows) {
        std::path::absolute(root)
    } else {
        root.canonicalize()
    }
}

/// Whether `path` is `root` or lies below it.
pub fn is_under(path: &str, root: &str) -> bool {
    Path::new(path).starts_with(root)
}

fn found(path: String, meta: &std::fs::Metadata) -> FoundFile {
    let mtime_ns = match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    };
    FoundFile { path, size: meta.len(), mtime_ns }
}

fn problem(path: &Path, error: String) -> WalkProblem {
    WalkProblem { path: path.to_string_lossy().into_owned(), error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_finds_files_recursively_once_and_skips_hidden() {
        let dir = std::env::temp_dir().join(format!("brivl-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
        for f in ["x.jpg", "a/y.png", "a/b/z.gif", ".DS_Store", ".hidden/w.jpg"] {
            std::fs::write(dir.join(f), b"12345").unwrap();
        }
        // Overlapping roots and a file root: each file once.
        let w = walk(&[dir.clone(), dir.join("a"), dir.join("x.jpg")]).unwrap();
        let names: Vec<&str> = w.files.iter().map(|f| f.path.strip_prefix(dir.to_str().unwrap()).unwrap()).collect();
        assert_eq!(names, ["/a/b/z.gif", "/a/y.png", "/x.jpg"]);
        assert!(w.files.iter().all(|f| f.size == 5 && f.mtime_ns > 0));
        assert!(w.problems.is_empty());
        assert!(is_under(&w.files[0].path, &w.roots[1]));
        assert!(!is_under(&w.files[2].path, &w.roots[1]));
        // "a" is not a prefix of "ab": component-wise.
        assert!(!is_under("/p/ab/c.jpg", "/p/a"));
        assert!(walk(&[dir.join("missing")]).unwrap_err().contains("missing"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
