//! Files written whole or not at all (a model from `brivl convert`, the search matrix cache): the
//! bytes go to `<name>.<pid>.tmp` beside the target, which is renamed over it once complete. The
//! temporary file is removed on every error (and on a panic); one left by a killed process is
//! swept by the next write to the same target.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Writes `path` through `fill`; on any error the target is unchanged and no temporary file stays.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> std::io::Result<()> {
    sweep(path);
    let tmp = Temp(temp_name(path, std::process::id()));
    let mut w = BufWriter::new(File::create(&tmp.0)?);
    fill(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    std::mem::forget(tmp); // renamed: nothing left to remove
    Ok(())
}

/// Removes its file when dropped (error paths and unwinding).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

fn temp_name(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.tmp"));
    PathBuf::from(name)
}

/// Removes `<name>.<pid>.tmp` files of processes that are gone (on Linux, by `/proc`; elsewhere,
/// by age: no write takes an hour).
fn sweep(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('.'))
            .and_then(|f| f.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = if cfg!(target_os = "linux") {
            !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > Duration::from_secs(3600))
        };
        if gone && pid != std::process::id() {
            std::fs::remove_file(entry.path()).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("brivl-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("m.bin");
        // A leftover of a killed process (pid 4294967295 never exists) is swept.
        std::fs::write(temp_name(&target, u32::MAX), b"half").unwrap();
        write_with(&target, |w| w.write_all(b"whole")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        // A failing write keeps the old file and leaves no temporary one.
        let err = write_with(&target, |w| {
            w.write_all(b"par")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["m.bin"], "only the target is left");
        std::fs::remove_dir_all(&dir).ok();
    }
}
