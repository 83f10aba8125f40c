//! Tensors: a GPU buffer, a shape and a dtype.
// wgpu's handles are Send + Sync natively but not on wasm, where there is one thread: the Arcs
// that share them are fine there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::pool::{BufferPool, STORAGE_USAGE};
use crate::quant::Packed;
use crate::{Error, Gpu, Result};

/// Element types. `F16` and `Q8` are weight formats for `[rows, cols]` matrices, stored as
/// packed `u32` words row by row (see `quant.rs`), so they bind on adapters without `shader-f16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Two halves per word, rows padded to whole words.
    F16,
    /// Four signed bytes per word, rows padded to whole words, then f32 scales per group of a row.
    Q8,
    /// Token ids, masks, packed RGBA8 pixels.
    U32,
}

struct Storage {
    buffer: Option<wgpu::Buffer>,
    /// Set for intermediate tensors: their buffer goes back to the pool when dropped.
    pool: Option<Arc<BufferPool>>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let (Some(pool), Some(buffer)) = (&self.pool, self.buffer.take()) {
            pool.give_back(buffer);
        }
    }
}

/// A tensor on the GPU. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

fn byte_len(words: usize) -> u64 {
    (words.max(1) * 4) as u64
}

impl Tensor {
    /// An f32 tensor for a kernel to write, from the pool. Its contents are undefined.
    pub(crate) fn uninit(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        let bytes = byte_len(shape.iter().product());
        gpu.check_fits(bytes)?;
        let buffer = gpu.pool.take(&gpu.device, bytes);
        Ok(Self {
            storage: Arc::new(Storage { buffer: Some(buffer), pool: Some(gpu.pool.clone()) }),
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    fn from_words(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Self> {
        gpu.check_fits(bytes.len() as u64)?;
        let padded;
        let contents = if bytes.is_empty() {
            padded = [0u8; 4];
            &padded[..]
        } else {
            bytes
        };
        let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("brivl tensor"),
            contents,
            usage: STORAGE_USAGE,
        });
        Ok(Self { storage: Arc::new(Storage { buffer: Some(buffer), pool: None }), shape: shape.to_vec(), dtype })
    }

    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Self> {
        check_len(shape, data.len())?;
        Self::from_words(gpu, shape, DType::F32, bytemuck::cast_slice(data))
    }

    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Self> {
        check_len(shape, data.len())?;
        Self::from_words(gpu, shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Uploads a packed `[rows, cols]` weight matrix (f32, f16 or q8).
    pub fn from_packed(gpu: &Gpu, packed: &Packed) -> Result<Self> {
        Self::from_words(gpu, &[packed.rows, packed.cols], packed.dtype, bytemuck::cast_slice(&packed.words))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same buffer seen with another shape of as many elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        check_len(shape, self.numel())?;
        Ok(Self { storage: self.storage.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    /// Whether this is an intermediate (pooled) tensor rather than a weight or an upload.
    pub(crate) fn is_activation(&self) -> bool {
        self.storage.pool.is_some()
    }

    /// Bytes a kernel can touch: the elements of an intermediate, the whole buffer of a weight.
    pub(crate) fn bound_bytes(&self) -> u64 {
        if self.is_activation() {
            byte_len(self.numel())
        } else {
            self.buffer().size()
        }
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer.as_ref().expect("tensor buffer is present until drop")
    }

    /// Copies the buffer back to the host as raw words. Submit the pass that writes it first.
    pub(crate) async fn read_words(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let staging = Readback::record(gpu, &mut encoder, self);
        gpu.queue.submit([encoder.finish()]);
        staging.start().words(gpu).await
    }

    /// Reads an f32 tensor back to the host.
    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            return Err(Error::Shape(format!("read_f32 on a {:?} tensor", self.dtype)));
        }
        let mut words = self.read_words(gpu).await?;
        words.truncate(self.numel());
        Ok(bytemuck::cast_vec(words))
    }
}

/// A tensor's copy on its way to the host, recorded in the same command buffer as the pass that
/// writes it, so that later passes can be submitted before this one is read. (`pub` because the
/// backend trait names it; the crate does not export it.)
pub struct Readback {
    staging: wgpu::Buffer,
    numel: usize,
    mapped: Option<futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
}

impl Readback {
    /// Records the copy of `t` into a new staging buffer. Submit `encoder`, then call [`start`].
    ///
    /// [`start`]: Readback::start
    pub(crate) fn record(gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, t: &Tensor) -> Self {
        // An activation's buffer may be larger than the tensor (size classes): copy only the tensor.
        let size = t.bound_bytes();
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("brivl readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, size);
        Self { staging, numel: t.numel(), mapped: None }
    }

    /// Asks for the mapping; it completes when the GPU has done the work submitted before.
    pub(crate) fn start(mut self) -> Self {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.mapped = Some(rx);
        self
    }

    /// Waits for the copy and returns its words.
    pub(crate) async fn words(self, gpu: &Gpu) -> Result<Vec<u32>> {
        let rx = self.mapped.ok_or_else(|| Error::Readback("read before its pass was submitted".into()))?;
        #[cfg(not(target_arch = "wasm32"))]
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Readback("the device dropped the mapping".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        gpu.take_errors()?;
        let view = self.staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
        let words: Vec<u32> = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        self.staging.unmap();
        Ok(words)
    }

    /// Waits for the copy of an f32 tensor and returns its values.
    pub(crate) async fn f32s(self, gpu: &Gpu) -> Result<Vec<f32>> {
        let numel = self.numel;
        let mut words = self.words(gpu).await?;
        words.truncate(numel);
        Ok(bytemuck::cast_vec(words))
    }
}

pub(crate) fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::Shape(format!("shape {shape:?} holds {n} elements, data has {len}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gpu_test;

    gpu_test!(too_large_tensors_are_refused_with_the_limit, |gpu| {
        let words = (gpu.limits().max_storage_buffer_binding_size / 4 + 1) as usize;
        let err = Tensor::uninit(gpu, &[words]).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit_name: "maxStorageBufferBindingSize", .. }), "{err}");
        assert!(err.to_string().contains("does not fit this adapter"));
    });

    gpu_test!(dropped_activations_return_to_the_pool, |gpu| {
        // An odd size no other test uses, so parallel tests cannot take the buffer first.
        let t = Tensor::uninit(gpu, &[7919, 3]).unwrap();
        let first = t.buffer().clone();
        drop(t);
        let again = Tensor::uninit(gpu, &[3, 7919]).unwrap();
        assert!(*again.buffer() == first, "the pooled buffer was not reused");
        // Weights are not pooled: they live as long as the model.
        let w = Tensor::from_f32(gpu, &[7919, 3], &vec![0.0; 7919 * 3]).unwrap();
        assert!(*w.buffer() != first);
    });

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_pool_reuses_across_passes_and_lets_an_unused_batch_size_go() {
        // A device of its own, so that other tests' tensors do not count.
        let gpu = pollster::block_on(Gpu::new()).unwrap();
        let forward = |batch: usize| {
            let t: Vec<Tensor> = (0..6).map(|i| Tensor::uninit(&gpu, &[batch, 1000 + 37 * i]).unwrap()).collect();
            drop(t);
            gpu.pool.end_pass();
            gpu.pool_bytes()
        };
        let at8 = forward(8);
        assert_eq!(at8.live, 0);
        assert_eq!(forward(8), at8, "a second pass at the same batch allocates nothing new");
        let at1 = forward(1);
        assert!(at1.free > at8.free, "batch 8's buffers are kept one pass more");
        let only1 = forward(1);
        assert!(only1.free < at8.free / 4, "batch 8's buffers are released: {only1:?} vs {at8:?}");
        assert_eq!(forward(1), only1);
        // A tensor in a larger buffer than itself reads back as itself.
        let pass_data: Vec<f32> = (0..1001).map(|i| i as f32).collect();
        let mut pass = crate::Pass::new(&gpu);
        let src = Tensor::from_f32(&gpu, &[1001], &pass_data).unwrap();
        let y = crate::ops::elementwise::add(&mut pass, &src, &src).unwrap();
        assert!(y.buffer().size() > 4 * 1001);
        pass.submit().unwrap();
        let want: Vec<f32> = pass_data.iter().map(|v| 2.0 * v).collect();
        assert_eq!(pollster::block_on(y.read_f32(&gpu)).unwrap(), want);
    }

    gpu_test!(readback_round_trips_and_checks_dtype, |gpu| {
        let data: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 3.0).collect();
        let t = Tensor::from_f32(gpu, &[7, 11, 13], &data).unwrap();
        assert_eq!(t.read_f32(gpu).await.unwrap(), data);
        let ids = Tensor::from_u32(gpu, &[3], &[1, 2, 3]).unwrap();
        assert!(ids.read_f32(gpu).await.is_err());
        assert_eq!(ids.read_words(gpu).await.unwrap(), [1, 2, 3]);
        assert!(Tensor::from_f32(gpu, &[2, 2], &[1.0; 3]).is_err());
        assert!(t.reshape(&[1001]).is_ok() && t.reshape(&[1000]).is_err());
    });
}
