//! Intermediate tensors come and go at the same few sizes on every forward pass, so their
//! buffers are kept by exact size and handed out again instead of being reallocated.
//!
//! Reuse inside one pass is safe: WebGPU orders the dispatches of a pass, and a buffer returns
//! to the pool only when its last tensor is dropped, i.e. after its last recorded use.

use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

impl BufferPool {
    pub(crate) fn take(&self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        if let Some(buffer) = self.free.lock().unwrap().get_mut(&size).and_then(Vec::pop) {
            return buffer;
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("brivl activation"),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn give_back(&self, buffer: wgpu::Buffer) {
        self.free.lock().unwrap().entry(buffer.size()).or_default().push(buffer);
    }
}
