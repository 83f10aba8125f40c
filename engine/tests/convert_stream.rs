//! Streaming conversion, as the web app runs it: the checkpoint read from a file in slices and
//! the model file written at offsets as each tensor is made. Its bytes must be those of the
//! in-memory path (`convert::convert` on the whole file), for every weight format, and it must
//! hold about one tensor at a time rather than the checkpoint or the model (counting allocator).
#![cfg(unix)]

mod support;

use std::path::PathBuf;

use brivl_engine::model_file::{ModelFile, WriteAt};
use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::{checkpoint, convert, DType};
use support::{peak_while, Tracking};

#[global_allocator]
static ALLOC: Tracking = Tracking;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn tiny_config() -> BrivlConfig {
    let json = std::fs::read_to_string(fixture("tiny/config.json")).unwrap();
    convert::options_from_json(&json).unwrap()
}

/// A model file on disk, written at offsets (out of order: the header comes last).
struct Disk {
    file: std::fs::File,
    writes: usize,
    backwards: usize,
    end: u64,
}

impl WriteAt for Disk {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> brivl_engine::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset).unwrap();
        self.writes += 1;
        self.backwards += usize::from(offset < self.end);
        self.end = self.end.max(offset + bytes.len() as u64);
        Ok(())
    }
}

#[test]
fn streamed_from_a_file_to_a_file_gives_the_bytes_of_the_whole_file_path() {
    let path = fixture("tiny/brivl-tiny.pth");
    let vocab = std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap();
    let config = tiny_config();
    let dir = std::env::temp_dir().join(format!("brivl-convert-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for quant in [DType::F32, DType::F16, DType::Q8] {
        let bytes = std::fs::read(&path).unwrap();
        let (whole, whole_peak) = peak_while(|| {
            let ck = checkpoint::read_checkpoint(&bytes).unwrap();
            convert::convert(&convert::state_dict(&ck), &vocab, &config, quant).unwrap()
        });
        let out_path = dir.join(format!("{quant:?}.safetensors"));
        let file = std::fs::File::open(&path).unwrap();
        let ((disk, hash, steps, largest), stream_peak) = peak_while(|| {
            let ck = checkpoint::read_checkpoint_from(&file).unwrap();
            let source = convert::state_dict(&ck);
            let largest = ck.iter().map(|(_, t)| t.read_bytes()).max().unwrap();
            let plan = convert::plan(&source, &vocab, &config, quant).unwrap();
            assert_eq!(plan.total_bytes(), whole.bytes.len() as u64);
            let out = Disk { file: std::fs::File::create(&out_path).unwrap(), writes: 0, backwards: 0, end: 0 };
            let mut steps = 0;
            let (disk, hash) = plan.write(out, &mut |done, _| steps = done).unwrap();
            (disk, hash, steps, largest)
        });
        let streamed = std::fs::read(&out_path).unwrap();
        assert!(streamed == whole.bytes, "{quant:?}: streamed bytes differ from the in-memory conversion");
        assert_eq!(hash, whole.content_hash, "{quant:?}: hash computed on the way");
        assert_eq!(ModelFile::parse(&streamed).unwrap().content_hash, hash);
        assert!(disk.writes > steps && disk.backwards > 0, "{quant:?}: written at offsets, header last");
        eprintln!(
            "{quant:?}: {} steps, largest tensor {:.1} MB; peak {:.1} MB streamed, {:.1} MB in memory",
            steps,
            largest as f64 / 1e6,
            stream_peak as f64 / 1e6,
            whole_peak as f64 / 1e6
        );
        // One step's tensors: its f32 values, their stored form, bookkeeping. Not the
        // checkpoint (4 MB) plus the model, as the in-memory path holds.
        assert!(stream_peak < 3 * largest + (1 << 20), "{quant:?}: {stream_peak} bytes at once");
        assert!(stream_peak < whole_peak, "{quant:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_that_shrinks_while_it_is_read_is_an_error_not_a_panic() {
    // Read the directory from the whole file, then cut it: tensors now lie past its end.
    let dir = std::env::temp_dir().join(format!("brivl-convert-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cut.pth");
    std::fs::copy(fixture("tiny/brivl-tiny.pth"), &path).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let ck = checkpoint::read_checkpoint_from(&file).unwrap();
    file.set_len(1000).unwrap();
    let source = convert::state_dict(&ck);
    let vocab = std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap();
    let plan = convert::plan(&source, &vocab, &tiny_config(), DType::Q8).unwrap();
    let err = plan.write(Vec::new(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("reading the checkpoint failed") || err.contains("runs past the end of the file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_parsed_model_file_packs_each_tensor_only_when_asked() {
    // Loading onto the GPU uploads tensor by tensor from the file's bytes: parsing must not make
    // a second copy of the weights (it did: every tensor packed up front).
    let bytes = std::fs::read(fixture("tiny/brivl-tiny.pth")).unwrap();
    let ck = checkpoint::read_checkpoint(&bytes).unwrap();
    let vocab = std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap();
    let model = convert::convert(&convert::state_dict(&ck), &vocab, &tiny_config(), DType::F32).unwrap().bytes;
    let (file, peak) = peak_while(|| ModelFile::parse(&model).unwrap());
    eprintln!("parsing a {:.1} MB model file: peak {:.2} MB", model.len() as f64 / 1e6, peak as f64 / 1e6);
    // The header, names and vocabulary, not the weights (packing them all took the file's size).
    assert!(peak < model.len() / 2, "{peak} bytes to parse {} bytes", model.len());
    let t = file.get("text.embeddings.word.weight").unwrap();
    assert_eq!((t.shape.as_slice(), t.packed.rows), (file.shape("text.embeddings.word.weight").unwrap(), 21128));
    assert_eq!(file.weights(), DType::F32);
}
