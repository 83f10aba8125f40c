//! English queries on the demo model (issue 7): each distinct English caption of the held-out
//! album (`www/demo/album/captions.tsv`: file, zh, en) is translated with the shipped dictionary
//! (`Dictionary::prepare_query`), embedded and ranked against the album's photos. Bar: R@1 >= 0.7.
//! Chinese recall is printed beside it. Skips, saying so, when the demo model is not there.
//!
//! A hit at k is a photo of the query's scene among the k most similar. Scenes are told apart by
//! their Chinese caption: "a red ball on the grass" and "one red ball on the grass" are one scene
//! (一个红色的球在草地上), so either photo answers either query.

#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::translate::Dictionary;
use brivl_engine::{photo, Gpu};

const MIN_R1_EN: f64 = 0.7;
const BATCH: usize = 16;

fn www(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../www").join(rel)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Recall at each k; `labels[i]` is photo i's scene, `wanted[q]` query q's scene.
fn recall(photos: &[Vec<f32>], labels: &[String], wanted: &[String], embs: &[Vec<f32>], ks: &[usize]) -> Vec<f64> {
    let mut hits = vec![0usize; ks.len()];
    for (q, e) in wanted.iter().zip(embs) {
        let sims: Vec<f32> = photos.iter().map(|p| dot(p, e)).collect();
        let mut order: Vec<usize> = (0..photos.len()).collect();
        order.sort_by(|&i, &j| sims[j].total_cmp(&sims[i]));
        for (h, &k) in hits.iter_mut().zip(ks) {
            if order[..k.min(order.len())].iter().any(|&i| &labels[i] == q) {
                *h += 1;
            }
        }
    }
    hits.iter().map(|&h| h as f64 / wanted.len() as f64).collect()
}

fn distinct(v: &[String]) -> Vec<String> {
    let mut d = v.to_vec();
    d.sort();
    d.dedup();
    d
}

fn embed_texts(embedder: &mut Embedder, texts: &[String]) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(pollster::block_on(embedder.embed_texts(&refs, None)).unwrap());
    }
    out
}

#[test]
fn english_queries_find_held_out_demo_photos() {
    let model = www("models/brivl-demo-q8.safetensors");
    let captions = www("demo/album/captions.tsv");
    if !model.exists() || !captions.exists() {
        eprintln!("SKIPPED: the demo model ({}) or album ({}) is not there", model.display(), captions.display());
        return;
    }
    let dict = Dictionary::builtin().unwrap();
    let (mut files, mut zh, mut en) = (Vec::new(), Vec::new(), Vec::new());
    for line in std::fs::read_to_string(&captions).unwrap().lines().filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "captions.tsv: file, zh, en per line: {line:?}");
        files.push(cols[0].to_string());
        zh.push(cols[1].to_string());
        en.push(cols[2].to_string());
    }

    let en_queries = distinct(&en);
    let mut translated = Vec::with_capacity(en_queries.len());
    let mut en_scenes = Vec::with_capacity(en_queries.len());
    let mut same_as_caption = 0;
    for q in &en_queries {
        let p = dict.prepare_query(q);
        assert!(p.unknown.is_empty(), "{q:?}: the dictionary lacks {:?}", p.unknown);
        let scene = &zh[en.iter().position(|e| e == q).unwrap()];
        if &p.query_used == scene {
            same_as_caption += 1;
        } else {
            eprintln!("  {q:?} -> {:?} (caption {scene:?})", p.query_used);
        }
        translated.push(p.query_used);
        en_scenes.push(scene.clone());
    }

    let file = ModelFile::parse(&std::fs::read(&model).unwrap()).unwrap();
    // The GPU where there is one (lavapipe on CI); the CPU path gives the same embeddings.
    let gpu = pollster::block_on(Gpu::new()).ok();
    let mut embedder = Embedder::load(&file, gpu.as_ref()).unwrap();
    let mut photos = Vec::with_capacity(files.len());
    for chunk in files.chunks(BATCH) {
        let pixels: Vec<Pixels> = chunk
            .iter()
            .map(|f| {
                let img = photo::decode(&std::fs::read(www(&format!("demo/album/{f}"))).unwrap()).unwrap();
                Pixels { width: img.width as usize, height: img.height as usize, rgba: img.pack_rgba_u32() }
            })
            .collect();
        photos.extend(pollster::block_on(embedder.embed_images(&pixels)).unwrap());
    }

    let ks = [1, 5];
    let zh_queries = distinct(&zh);
    let zh_recall = recall(&photos, &zh, &zh_queries, &embed_texts(&mut embedder, &zh_queries), &ks);
    let en_recall = recall(&photos, &zh, &en_scenes, &embed_texts(&mut embedder, &translated), &ks);
    let raw_recall = recall(&photos, &zh, &en_scenes, &embed_texts(&mut embedder, &en_queries), &ks);
    eprintln!(
        "demo recall on {} ({} photos); {same_as_caption}/{} English captions translate to their Chinese caption\n\
         | queries | n | R@1 | R@5 |\n|---|---|---|---|\n\
         | zh captions | {} | {:.3} | {:.3} |\n\
         | en captions, translated | {} | {:.3} | {:.3} |\n\
         | en captions, raw | {} | {:.3} | {:.3} |",
        embedder.backend_name(),
        photos.len(),
        en_queries.len(),
        zh_queries.len(),
        zh_recall[0],
        zh_recall[1],
        en_queries.len(),
        en_recall[0],
        en_recall[1],
        en_queries.len(),
        raw_recall[0],
        raw_recall[1],
    );
    assert!(en_recall[0] >= MIN_R1_EN, "English R@1 {:.3} below {MIN_R1_EN}", en_recall[0]);
}
