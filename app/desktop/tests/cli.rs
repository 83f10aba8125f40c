//! The `brivl` binary end to end on the tiny model: convert, then embed a folder holding a
//! file that is not a photo, and texts; every input gets a line, in order.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
}

fn brivl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_brivl")).args(args).output().expect("run brivl")
}

#[test]
fn convert_then_embed_a_folder_and_texts() {
    let dir = std::env::temp_dir().join(format!("brivl-cli-{}", std::process::id()));
    let album = dir.join("album");
    std::fs::create_dir_all(album.join("sub")).unwrap();
    std::fs::copy(fixture("tiny/images/synth_rgba.png"), album.join("a.png")).unwrap();
    std::fs::copy(fixture("tiny/images/synth_palette.gif"), album.join("sub/c.gif")).unwrap();
    std::fs::write(album.join("b.jpg"), b"not a jpeg").unwrap();
    let model = dir.join("tiny.safetensors");
    let out = dir.join("out.jsonl");

    let ckpt = fixture("tiny/brivl-tiny.pth");
    let vocab = fixture("tokenizer/vocab.txt");
    let r = brivl(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--vocab",
        vocab.to_str().unwrap(),
        "--quant",
        "q8",
        "-o",
        model.to_str().unwrap(),
        "--image-size",
        "200",
        "--img-heads",
        "2",
        "--text-heads",
        "2",
        "--bert-heads",
        "2",
    ]);
    assert!(r.status.success(), "convert: {}", String::from_utf8_lossy(&r.stderr));

    let r = brivl(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--images",
        album.to_str().unwrap(),
        "--text",
        "海边的日落",
        "--text",
        "a cat on a sofa",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "embed: {}", String::from_utf8_lossy(&r.stderr));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["image", "error", "image", "text", "text"]);
    assert!(lines[1]["name"].as_str().unwrap().ends_with("b.jpg"));
    assert!(lines[1]["error"].as_str().unwrap().contains("not an image format"));
    assert_eq!(lines[3]["text"], "海边的日落");
    for l in [&lines[0], &lines[2], &lines[3], &lines[4]] {
        let e: Vec<f64> = l["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let norm: f64 = e.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embeddings are L2-normalised");
    }

    // A broken model file is refused with the reason and a failing exit code.
    std::fs::write(dir.join("bad.safetensors"), b"garbage").unwrap();
    let r = brivl(&["bench", "--model", dir.join("bad.safetensors").to_str().unwrap(), "--backend", "cpu"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a safetensors model file"));
    std::fs::remove_dir_all(&dir).ok();
}
