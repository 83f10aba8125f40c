//! A minimal reader for the zip archives `torch.save` writes: stored (uncompressed) entries,
//! optionally zip64. Entries are returned as places in the file, so nothing is read or copied
//! until a tensor is.

use super::{CheckpointError, Input};

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// One archive member: its name and where its bytes lie in the file.
pub(crate) struct Entry {
    pub name: String,
    /// File offset of the entry's bytes.
    pub at: u64,
    pub len: u64,
    pub crc32: u32,
}

fn corrupt(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Zip(msg.into())
}

/// Bounds-checked little-endian reads of bytes held in memory: the end records and the central
/// directory, each read from the input once. `base` is where `bytes` starts in the file, so
/// messages name file offsets.
struct Reader<'a> {
    bytes: &'a [u8],
    base: u64,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn slice(&self, at: u64, len: u64, what: &str) -> Result<&'a [u8], CheckpointError> {
        let rel = at.checked_sub(self.base);
        match rel.and_then(|r| r.checked_add(len).map(|end| (r, end))) {
            Some((r, end)) if end <= self.bytes.len() as u64 => Ok(&self.bytes[r as usize..end as usize]),
            _ => Err(corrupt(format!(
                "{what} at byte {at} (+{len}) runs past the end of the {} ({} bytes); is it truncated?",
                self.what,
                self.bytes.len()
            ))),
        }
    }
    fn u16(&self, at: u64, what: &str) -> Result<u16, CheckpointError> {
        let b = self.slice(at, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: u64, what: &str) -> Result<u32, CheckpointError> {
        let b = self.slice(at, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: u64, what: &str) -> Result<u64, CheckpointError> {
        let b = self.slice(at, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Finds the end-of-central-directory record: the last one within the 64 KiB comment window
/// (`tail` is the file's last bytes, up to that window).
fn find_eocd(tail: &[u8]) -> Option<usize> {
    if tail.len() < 22 {
        return None;
    }
    let last = tail.len() - 22;
    let first = last.saturating_sub(0xFFFF);
    (first..=last).rev().find(|&i| tail[i..i + 4] == EOCD_SIG.to_le_bytes())
}

/// A record of `len` bytes at `at`, read from the input and checked against its end.
fn record(input: Input<'_>, at: u64, len: u64, what: &'static str) -> Result<Vec<u8>, CheckpointError> {
    Ok(input.read(at, len, what)?.into_owned())
}

/// Lists every member of the archive. Fails on anything torch would not write
/// (compression, encryption, multi-disk archives). Reads the end records, the central
/// directory and one local header per entry; never an entry's bytes.
pub(crate) fn entries(input: Input<'_>) -> Result<Vec<Entry>, CheckpointError> {
    let size = input.len();
    let tail_at = size.saturating_sub(22 + 0xFFFF);
    let tail = input.read(tail_at, size - tail_at, "zip end record")?;
    let eocd = find_eocd(&tail).ok_or_else(|| {
        CheckpointError::NotZip(if input.starts_with(b"PK\x03\x04") {
            "it starts like a zip but has no end-of-central-directory record (truncated?)".into()
        } else {
            "it is not a zip archive".into()
        })
    })?;
    let r = Reader { bytes: &tail, base: tail_at, what: "file" };
    let e = tail_at + eocd as u64;
    let mut count = r.u16(e + 10, "zip directory")? as u64;
    let mut cd_size = r.u32(e + 12, "zip directory")? as u64;
    let mut cd_offset = r.u32(e + 16, "zip directory")? as u64;
    if r.u16(e + 4, "zip directory")? != 0 || r.u16(e + 6, "zip directory")? != 0 {
        return Err(corrupt("multi-disk zip archives are not supported"));
    }
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // zip64: a locator sits right before the classic record and points at the zip64 one.
        let loc = e.checked_sub(20).ok_or_else(|| corrupt("zip64 locator missing"))?;
        let locator = record(input, loc, 20, "zip64 locator")?;
        let l = Reader { bytes: &locator, base: loc, what: "file" };
        if l.u32(loc, "zip64 locator")? != ZIP64_LOCATOR_SIG {
            return Err(corrupt("zip64 locator missing"));
        }
        let rec = l.u64(loc + 8, "zip64 locator")?;
        let record56 = record(input, rec, 56, "zip64 directory record")?;
        let z = Reader { bytes: &record56, base: rec, what: "file" };
        if z.u32(rec, "zip64 directory record")? != ZIP64_EOCD_SIG {
            return Err(corrupt("bad zip64 directory record signature"));
        }
        count = z.u64(rec + 32, "zip64 directory record")?;
        cd_size = z.u64(rec + 40, "zip64 directory record")?;
        cd_offset = z.u64(rec + 48, "zip64 directory record")?;
    }
    // Each central entry is at least 46 bytes: a bogus count cannot make us allocate much.
    let cd = input.read(cd_offset, cd_size, "zip central directory")?;
    if count.saturating_mul(46) > cd_size {
        return Err(corrupt(format!("zip directory claims {count} entries in {cd_size} bytes")));
    }
    let r = Reader { bytes: &cd, base: cd_offset, what: "zip directory" };
    let mut out = Vec::with_capacity(count as usize);
    let mut at = cd_offset;
    for _ in 0..count {
        if r.u32(at, "zip central directory entry")? != CENTRAL_SIG {
            return Err(corrupt(format!("bad central directory entry signature at byte {at}")));
        }
        let flags = r.u16(at + 8, "zip entry")?;
        let method = r.u16(at + 10, "zip entry")?;
        let crc32 = r.u32(at + 16, "zip entry")?;
        let mut csize = r.u32(at + 20, "zip entry")? as u64;
        let mut usize_ = r.u32(at + 24, "zip entry")? as u64;
        let name_len = r.u16(at + 28, "zip entry")? as u64;
        let extra_len = r.u16(at + 30, "zip entry")? as u64;
        let comment_len = r.u16(at + 32, "zip entry")? as u64;
        let mut local = r.u32(at + 42, "zip entry")? as u64;
        let name_bytes = r.slice(at + 46, name_len, "zip entry name")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = r.slice(at + 46 + name_len, extra_len, "zip entry extra field")?;
        apply_zip64_extra(extra, &mut usize_, &mut csize, &mut local)?;
        at += 46 + name_len + extra_len + comment_len;

        if flags & 1 != 0 {
            return Err(corrupt(format!("zip entry {name:?} is encrypted")));
        }
        if method != 0 {
            return Err(CheckpointError::Compressed { name, method });
        }
        if csize != usize_ {
            return Err(corrupt(format!("stored zip entry {name:?} has different packed and unpacked sizes")));
        }
        let header = record(input, local, 30, "zip local header")?;
        let h = Reader { bytes: &header, base: local, what: "file" };
        if h.u32(local, "zip local header")? != LOCAL_SIG {
            return Err(corrupt(format!("bad local header signature for {name:?}")));
        }
        let lname = h.u16(local + 26, "zip local header")? as u64;
        let lextra = h.u16(local + 28, "zip local header")? as u64;
        let data_at = local.saturating_add(30 + lname + lextra);
        input.check(data_at, csize, &format!("zip entry {name:?}"))?;
        out.push(Entry { name, at: data_at, len: csize, crc32 });
    }
    Ok(out)
}

/// The zip64 extra field (id 1) holds, in order, whichever of the three sizes overflowed.
fn apply_zip64_extra(
    mut extra: &[u8],
    usize_: &mut u64,
    csize: &mut u64,
    local: &mut u64,
) -> Result<(), CheckpointError> {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
        let body = extra.get(4..4 + len).ok_or_else(|| corrupt("zip extra field runs past its entry"))?;
        if id == 1 {
            let mut fields = body.chunks_exact(8).map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            });
            for v in [&mut *usize_, &mut *csize, &mut *local] {
                if *v == 0xFFFF_FFFF {
                    *v = fields.next().ok_or_else(|| corrupt("zip64 extra field too short"))?;
                }
            }
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}

/// CRC-32 (IEEE), bitwise: only used on the small pickle entry.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
