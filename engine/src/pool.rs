//! Intermediate tensors come and go at the same few sizes on every forward pass, so their
//! buffers are kept and handed out again instead of being reallocated.
//!
//! Buffers are rounded up to size classes (four per power of two, so at most 25% is wasted) so
//! that nearby sizes share buffers, and each class keeps only as many buffers as the last two
//! passes used at once: memory follows the batch size in use instead of every size ever seen.
//!
//! Reuse inside one pass is safe: WebGPU orders the dispatches of a pass, and a buffer returns
//! to the pool only when its last tensor is dropped, i.e. after its last recorded use.

use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// The smallest buffer handed out.
const MIN_CLASS: u64 = 256;

/// `bytes` rounded up to its size class: a multiple of a quarter of its power of two.
pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    let power = 1u64 << (63 - bytes.leading_zeros());
    let step = power / 4;
    bytes.div_ceil(step).saturating_mul(step)
}

#[derive(Default)]
struct Class {
    free: Vec<wgpu::Buffer>,
    /// Buffers of this class held by tensors now.
    live: usize,
    /// The most held at once during this pass and the one before.
    peak_this: usize,
    peak_prev: usize,
}

/// Bytes the pool holds: in use by tensors, and free for reuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolBytes {
    pub live: u64,
    pub free: u64,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    classes: Mutex<HashMap<u64, Class>>,
}

impl BufferPool {
    /// A buffer of at least `size` bytes (its size class).
    pub(crate) fn take(&self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        let class = size_class(size);
        let reused = {
            let mut classes = self.classes.lock().unwrap();
            let c = classes.entry(class).or_default();
            c.live += 1;
            c.peak_this = c.peak_this.max(c.live);
            c.free.pop()
        };
        reused.unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("brivl activation"),
                size: class,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            })
        })
    }

    pub(crate) fn give_back(&self, buffer: wgpu::Buffer) {
        let mut classes = self.classes.lock().unwrap();
        let c = classes.entry(buffer.size()).or_default();
        c.live = c.live.saturating_sub(1);
        c.free.push(buffer);
    }

    /// Called after each submitted pass: every class keeps only as many buffers as the last two
    /// passes held at once, so a batch size no longer used gives its memory back. Dropped, not
    /// destroyed: a recorded pass may still hold a buffer, and wgpu frees it with the last handle.
    pub(crate) fn end_pass(&self) {
        let mut classes = self.classes.lock().unwrap();
        for c in classes.values_mut() {
            let keep = c.peak_this.max(c.peak_prev).saturating_sub(c.live);
            c.free.truncate(keep);
            c.peak_prev = c.peak_this;
            c.peak_this = c.live;
        }
        classes.retain(|_, c| c.live > 0 || !c.free.is_empty() || c.peak_prev > 0);
    }

    pub(crate) fn bytes(&self) -> PoolBytes {
        let classes = self.classes.lock().unwrap();
        classes.iter().fold(PoolBytes::default(), |b, (&size, c)| PoolBytes {
            live: b.live + size * c.live as u64,
            free: b.free + size * c.free.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_waste_at_most_a_quarter_and_never_shrink() {
        let mut last = 0;
        for bytes in (1..5000u64).chain([65_537, 1 << 20, (1 << 20) + 1, 3 << 30, u64::MAX / 2]) {
            let c = size_class(bytes);
            assert!(c >= bytes && c >= MIN_CLASS, "{bytes} -> {c}");
            assert!(bytes <= MIN_CLASS || (c - bytes) * 4 <= bytes, "{bytes} -> {c} wastes over 25%");
            assert!(c.is_multiple_of(4), "copies need 4-byte multiples: {bytes} -> {c}");
            assert!(c >= last);
            last = c;
        }
        assert_eq!([size_class(1000), size_class(1024), size_class(1025), size_class(1281)], [1024, 1024, 1280, 1536]);
    }
}
