//! `brivl index` and `brivl search` end to end on the tiny model (GPU backend: lavapipe on CI):
//! a folder of good photos plus corrupt, truncated, empty, non-image and huge-dimension files;
//! incremental runs (unchanged, changed, renamed, deleted); another model refused; a run killed
//! mid-way and run again. Every run passes `--db` inside a temporary folder.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
}

fn brivl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brivl")).args(args).output().expect("run brivl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brivl-index-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny fixture model converted to `quant` (q8 or f16: two models with different hashes).
fn tiny_model(dir: &Path, quant: &str) -> PathBuf {
    let model = dir.join(format!("tiny-{quant}.safetensors"));
    let (ckpt, vocab) = (fixture("tiny/brivl-tiny.pth"), fixture("tokenizer/vocab.txt"));
    #[rustfmt::skip]
    let r = brivl(&[
        "convert", ckpt.to_str().unwrap(), "--vocab", vocab.to_str().unwrap(), "--quant", quant,
        "-o", model.to_str().unwrap(),
        "--image-size", "200", "--img-heads", "2", "--text-heads", "2", "--bert-heads", "2",
    ]);
    assert!(r.status.success(), "convert: {}", text(&r.stderr));
    model
}

/// A photo made up for the tests: smooth colour fields that differ with `seed`.
fn synth_photo(path: &Path, seed: u32, width: u32, height: u32) {
    let img = RgbImage::from_fn(width, height, |x, y| {
        let s = seed.wrapping_mul(2654435761);
        Rgb([
            ((x * 255 / width) ^ (s & 0xff)) as u8,
            ((y * 255 / height) ^ ((s >> 8) & 0xff)) as u8,
            (((x + y) * 97 / (width + height)) as u8).wrapping_add((s >> 16) as u8),
        ])
    });
    let format = if seed.is_multiple_of(2) { ImageFormat::Jpeg } else { ImageFormat::Png };
    img.save_with_format(path, format).unwrap();
}

/// The demo model the web app ships (`www/models/`), made by `tests/reference/make_demo.sh`.
fn demo_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../www/models/brivl-demo-q8.safetensors")
}

/// The good photos of the test album, copied into `dir` (nested, as albums are): the demo
/// album's photos (`www/demo/album/`) or the tiny fixture's inputs, plus `synthesized` made-up
/// photos. Returns their paths.
fn good_photos_album(dir: &Path, demo: bool, synthesized: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let (from, to_dir) = if demo {
        (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../www/demo/album"), dir.join("demo"))
    } else {
        (fixture("tiny/images"), dir.join("fixture"))
    };
    std::fs::create_dir_all(&to_dir).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".pil.png") || name.ends_with(".tsv") || name.ends_with(".md") {
            continue; // PIL's decodes of the JPEGs (the same pictures again); the demo's notes
        }
        let to = to_dir.join(&name);
        std::fs::copy(&p, &to).unwrap();
        out.push(to);
    }
    for i in 0..synthesized {
        let sub = dir.join(format!("synth/{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let to = sub.join(format!("photo_{i:03}.{}", if i % 2 == 0 { "jpg" } else { "png" }));
        synth_photo(&to, i, 120 + 7 * i % 300, 90 + 13 * i % 250);
        out.push(to);
    }
    out.sort();
    out
}

/// Photos no decoder can use, each with a word its reason must contain, and files that are not
/// photos at all (counted, never listed).
fn bad_files(dir: &Path) -> (Vec<(PathBuf, &'static str)>, usize) {
    std::fs::create_dir_all(dir).unwrap();
    let good = std::fs::read(fixture("tiny/images/baike_14014334_0.jpg")).unwrap();
    let mut corrupt = b"\x89PNG\r\n\x1a\n".to_vec();
    corrupt.extend((0..600u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("corrupt.png", corrupt, "corrupt"),
        ("truncated.jpg", good[..good.len() / 2].to_vec(), "truncated"),
        ("huge.png", std::fs::read(fixture("photos/huge.png")).unwrap(), "too large"),
        ("huge.jpg", std::fs::read(fixture("photos/huge.jpg")).unwrap(), "too large"),
    ];
    let not_photos: Vec<(&str, Vec<u8>)> = vec![
        ("empty.jpg", Vec::new()),
        ("notes.txt", b"shopping list: rice, tea\n".to_vec()),
        ("not-a-photo.jpg", b"<html>hello</html>".to_vec()),
        ("clip.mp4", b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec()),
    ];
    for (name, bytes) in &not_photos {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let bad = files
        .into_iter()
        .map(|(name, bytes, why)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            (p, why)
        })
        .collect();
    (bad, not_photos.len())
}

/// (path, count) of every photo row.
fn indexed(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn.prepare("SELECT path, count(*) FROM photos GROUP BY path ORDER BY path").unwrap();
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

fn photo_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM photos", [], |r| r.get(0)))
        .unwrap_or(0)
}

fn paths(files: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = files.iter().map(|p| p.canonicalize().unwrap().to_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// The number before `what` in the summary line, e.g. "3 embedded".
fn count(stdout: &str, what: &str) -> usize {
    let at = stdout.find(what).unwrap_or_else(|| panic!("no '{what}' in: {stdout}"));
    let num: String = stdout[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    num.parse().unwrap_or_else(|_| panic!("no number before '{what}' in: {stdout}"))
}

/// `brivl index ALBUM --model M --db DB --backend B`, as arguments.
fn index_args<'a>(album: &'a Path, model: &'a Path, db: &'a Path, backend: &'a str) -> Vec<&'a str> {
    let path = |p: &'a Path| p.to_str().unwrap();
    vec!["index", path(album), "--model", path(model), "--db", path(db), "--backend", backend]
}

fn index(album: &Path, model: &Path, db: &Path, backend: &str) -> Output {
    brivl(&index_args(album, model, db, backend))
}

fn search_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["search", "--json"];
    all.extend_from_slice(args);
    let r = brivl(&all);
    assert!(r.status.success(), "search {args:?}: {}", text(&r.stderr));
    serde_json::from_slice(&r.stdout).unwrap()
}

#[test]
fn index_lists_bad_files_skips_unchanged_follows_changes_and_searches() {
    let dir = temp_dir("main");
    let model = demo_model();
    let album = dir.join("album");
    let mut good = good_photos_album(&album, true, 6);
    let (bad, not_photos) = bad_files(&album.join("bad"));
    let db = dir.join("db/index.sqlite");

    // First run: the good photos are indexed, each bad photo is listed with its reason, the files
    // that are not photos are only counted.
    let r = index(&album, &model, &db, "gpu");
    let (out, err) = (text(&r.stdout), text(&r.stderr));
    assert_eq!(r.status.code(), Some(4), "unreadable photos give exit code 4\n{out}\n{err}");
    assert_eq!(count(&out, "embedded"), good.len(), "{out}");
    assert_eq!(count(&out, "unreadable"), bad.len(), "{out}");
    assert_eq!(count(&out, "not photos"), not_photos, "{out}");
    for name in ["notes.txt", "clip.mp4", "empty.jpg", "not-a-photo.jpg"] {
        assert!(!err.contains(name), "{name} is not a photo, so not listed: {err}");
    }
    for (path, why) in &bad {
        let name = path.file_name().unwrap().to_str().unwrap();
        let line = err.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} not listed:\n{err}"));
        assert!(line.to_lowercase().contains(why), "{name}: reason should say '{why}': {line}");
    }
    let rows = indexed(&db);
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), paths(&good));
    assert!(rows.iter().all(|r| r.1 == 1));

    // Second run: nothing embedded, nothing read again; the bad files are still listed.
    let r = index(&album, &model, &db, "gpu");
    let (out, err) = (text(&r.stdout), text(&r.stderr));
    assert_eq!(r.status.code(), Some(4), "{out}\n{err}");
    assert_eq!(count(&out, "embedded"), 0, "{out}");
    assert_eq!(count(&out, "unchanged"), good.len(), "{out}");
    assert!(err.contains("0 to read"), "{err}");
    assert_eq!(count(&out, "not photos"), not_photos, "known not-photos are counted, not read: {out}");
    assert!(bad.iter().all(|(p, _)| err.contains(p.file_name().unwrap().to_str().unwrap())), "{err}");

    // The search matrix cache sits beside the index; keep this generation's to plant it later.
    let cache = PathBuf::from(format!("{}-search", db.display()));
    let stale_cache = std::fs::read(&cache).expect("index writes the search matrix cache");

    // Changes: one photo rewritten, one renamed, one deleted, one copied, the bad files removed.
    synth_photo(&good[0], 1000, 150, 100);
    let renamed = album.join("renamed.png");
    std::fs::rename(&good[1], &renamed).unwrap();
    std::fs::remove_file(&good[2]).unwrap();
    let copy = album.join("copy.jpg");
    std::fs::copy(&good[3], &copy).unwrap();
    std::fs::remove_dir_all(album.join("bad")).unwrap();
    let r = index(&album, &model, &db, "gpu");
    let out = text(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{out}\n{}", text(&r.stderr));
    assert_eq!(count(&out, "embedded"), 1, "only the rewritten photo is embedded: {out}");
    assert_eq!(count(&out, "reused"), 2, "the renamed and the copied photo reuse embeddings: {out}");
    assert_eq!(
        count(&out, "removed"),
        2 + bad.len() + not_photos,
        "renamed-away and deleted paths, the bad photos and the other files: {out}"
    );
    good[1] = renamed;
    good.remove(2);
    good.push(copy.clone());
    let rows = indexed(&db);
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), paths(&good));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let failures: i64 = conn.query_row("SELECT count(*) FROM failures", [], |r| r.get(0)).unwrap();
    assert_eq!(failures, 0, "failures of deleted files are forgotten");

    // Another model (f16 weights: another hash) is refused and writes nothing.
    let other = tiny_model(&dir, "f16");
    let r = index(&album, &other, &db, "gpu");
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("another --db"), "{err}");
    assert_eq!(indexed(&db), rows);

    // Text search: every photo ranked, best first, Chinese passed through as typed. The cache
    // of before the changes is planted first: search must see it is stale and rebuild it.
    std::fs::write(&cache, &stale_cache).unwrap();
    let dbs = db.to_str().unwrap();
    let v = search_json(&["海边的日落", "--db", dbs, "--backend", "gpu", "--top-k", "1000"]);
    assert_eq!(v["query_used"], "海边的日落");
    let results = v["results"].as_array().unwrap();
    let found: BTreeSet<&str> = results.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(found, paths(&good).iter().map(String::as_str).collect(), "the photos of now, not of the stale cache");
    assert_ne!(std::fs::read(&cache).unwrap(), stale_cache, "the stale cache was rebuilt");
    let scores: Vec<f64> = results.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // An English query is translated offline; the JSON says what the model read.
    let en = search_json(&["a cat on a sofa", "--db", dbs, "--backend", "cpu"]);
    assert_eq!(en["query_used"], "一只猫在沙发上");
    assert_eq!(en["lang"], "english");
    assert!(scores.iter().all(|s| (-1.01..=1.01).contains(s)));
    let v = search_json(&["海边的日落", "--db", dbs, "--top-k", "3", "--backend", "cpu"]);
    let top3: Vec<f64> = v["results"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(top3.len(), 3);
    for (a, b) in top3.iter().zip(&scores) {
        assert!((a - b).abs() < 1e-3, "CPU and GPU query embeddings rank alike: {a} vs {b}");
    }
    let v = search_json(&["海边的日落", "--db", dbs, "--min-score", &format!("{}", scores[2] - 1e-6)]);
    assert_eq!(v["results"].as_array().unwrap().len(), 3);

    // Photo search: an indexed photo needs no model (a bogus --model is never opened) and finds
    // itself with score 1; a new photo loads the recorded model.
    let v = search_json(&["--image", copy.to_str().unwrap(), "--db", dbs, "--model", "/nonexistent.safetensors"]);
    let first = &v["results"][0];
    assert!((first["score"].as_f64().unwrap() - 1.0).abs() < 2e-3, "{v}");
    let top_two: BTreeSet<&str> =
        v["results"].as_array().unwrap()[..2].iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(top_two.contains(copy.canonicalize().unwrap().to_str().unwrap()), "{v}");
    let outside = dir.join("new.png");
    synth_photo(&outside, 4242, 64, 48);
    let v = search_json(&["--image", outside.to_str().unwrap(), "--db", dbs, "--top-k", "2", "--backend", "cpu"]);
    assert_eq!(v["results"].as_array().unwrap().len(), 2);

    // Plain output: score TAB path.
    let r = brivl(&["search", "cat", "--db", dbs, "--top-k", "2", "--backend", "cpu"]);
    let out = text(&r.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.split('\t').next().unwrap().parse::<f32>().is_ok()), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Peak resident memory (VmHWM) of a child process, read until it exits, in MiB.
#[cfg(target_os = "linux")]
fn peak_rss_mib(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0) / 1024);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[cfg(target_os = "linux")]
#[test]
fn index_memory_stays_bounded_with_panoramas_and_videos() {
    // Photos, three 48-MP panoramas, a 3 GB "video" and a 3 GB file with a JPEG signature (both
    // sparse: nothing is written to disk). The video is never read, the huge file is refused by
    // size, and the panoramas pass through the byte budget one at a time.
    let dir = temp_dir("memory");
    let model = demo_model();
    let album = dir.join("album");
    let good = good_photos_album(&album, true, 0);
    let pano = album.join("pano");
    std::fs::create_dir_all(&pano).unwrap();
    for i in 0..3 {
        synth_photo(&pano.join(format!("pano{i}.jpg")), 2 * i, 12_000, 4_000);
    }
    let sparse = |name: &str, head: &[u8]| {
        use std::io::Write;
        let mut f = std::fs::File::create(album.join(name)).unwrap();
        f.write_all(head).unwrap();
        f.set_len(3 << 30).unwrap();
    };
    sparse("holiday.mov", b"\0\0\0\x14ftypqt  \0\0\0\0qt  ");
    sparse("disk.jpg", b"\xff\xd8\xff\xe0\0\x10JFIF\0");
    let db = dir.join("index.sqlite");
    let mut args = index_args(&album, &model, &db, "cpu");
    args.extend(["--memory-mb", "256", "--workers", "4"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_brivl"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let peak = peak_rss_mib(&mut child);
    let r = child.wait_with_output().unwrap();
    let (out, err) = (text(&r.stdout), text(&r.stderr));
    assert_eq!(r.status.code(), Some(4), "{out}\n{err}");
    assert_eq!(count(&out, "embedded"), good.len() + 3, "{out}");
    assert_eq!(count(&out, "not photos"), 1, "the video: {out}");
    assert!(err.contains("disk.jpg") && err.contains("--max-file-mb"), "{err}");
    // One 48-MP panorama decoded costs 7 bytes a pixel (RGB8 + RGBA) = 320 MiB, above the
    // 256 MiB budget, so it goes alone: without the budget four readers would hold ~1.3 GB.
    eprintln!("brivl index peak RSS: {peak} MiB");
    assert!(peak < 700, "peak RSS {peak} MiB: photos in flight are not bounded");
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn index_keeps_photos_of_a_folder_it_cannot_read_and_escapes_names() {
    let dir = temp_dir("unreadable");
    let model = demo_model();
    let album = dir.join("album");
    let good = good_photos_album(&album, true, 0);
    // A name that would forge a line and drive the terminal if printed raw.
    let evil = album.join("evil\n0.9999\t\x1b[31mfake.jpg");
    std::fs::copy(&good[0], &evil).unwrap();
    let db = dir.join("index.sqlite");
    let r = index(&album, &model, &db, "cpu");
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let dbs = db.to_str().unwrap();
    let r = brivl(&["search", "海边的日落", "--db", dbs, "--top-k", "1000", "--backend", "cpu"]);
    let out = text(&r.stdout);
    assert_eq!(out.lines().count(), good.len() + 1, "one line per photo, none forged: {out}");
    assert!(!out.contains('\x1b'), "no raw escape reaches the terminal");
    assert!(out.contains("evil\\u{a}0.9999\\u{9}\\u{1b}[31mfake.jpg"), "{out}");

    // The folder becomes unreadable (a link loop stands in for a folder without permission or
    // an offline share, which root could still read): its photos stay, and it is reported.
    let demo = album.join("demo");
    let moved = dir.join("demo-away");
    std::fs::rename(&demo, &moved).unwrap();
    std::os::unix::fs::symlink(&demo, &demo).unwrap();
    let r = index(&album, &model, &db, "cpu");
    let (out, err) = (text(&r.stdout), text(&r.stderr));
    assert_eq!(count(&out, "removed"), 0, "photos under an unreadable folder are kept: {out}\n{err}");
    assert_eq!(indexed(&db).len(), good.len() + 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn index_and_search_errors_are_one_line_with_exit_codes() {
    let dir = temp_dir("errors");
    let db = dir.join("none.sqlite");
    let r = brivl(&["search", "cat", "--db", db.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no index at"), "{err}");
    assert!(!db.exists(), "search creates nothing");

    let r = brivl(&["index", dir.join("missing").to_str().unwrap(), "--model", "m", "--db", db.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(text(&r.stderr).trim().lines().count(), 1, "{}", text(&r.stderr));

    let r = brivl(&["search", "--db", db.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "no query is a usage error");
    for cmd in [&["index", "--help"][..], &["search", "--help"][..], &["--help"][..]] {
        let r = brivl(cmd);
        assert!(r.status.success());
        let out = text(&r.stdout);
        assert!(out.contains("Exit codes") && out.contains("another model"), "{cmd:?}: {out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn index_killed_mid_run_then_rerun_has_every_photo_once() {
    let dir = temp_dir("kill");
    let model = tiny_model(&dir, "q8");
    let album = dir.join("album");
    let good = good_photos_album(&album, false, 150);
    let db = dir.join("index.sqlite");
    let mut args = index_args(&album, &model, &db, "cpu");
    args.extend(["--batch", "2", "--workers", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_brivl"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for some committed rows, then SIGKILL: no chance to clean up.
    let start = Instant::now();
    let seen = loop {
        let n = if db.exists() { photo_rows(&db) } else { 0 };
        if n > 0 {
            break n;
        }
        assert!(child.try_wait().unwrap().is_none(), "brivl index ended before it was killed");
        assert!(start.elapsed() < Duration::from_secs(300), "no rows after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");
    let kept = photo_rows(&db);
    assert!(kept >= seen && (kept as usize) < good.len(), "killed mid-run: {kept} of {} rows", good.len());

    let r = brivl(&args);
    let out = text(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{out}\n{}", text(&r.stderr));
    assert_eq!(count(&out, "embedded"), good.len() - kept as usize, "the rerun embeds only the rest: {out}");
    let rows = indexed(&db);
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), paths(&good));
    assert!(rows.iter().all(|r| r.1 == 1), "every photo exactly once");
    std::fs::remove_dir_all(&dir).ok();
}
