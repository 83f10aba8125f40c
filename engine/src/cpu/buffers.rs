//! Activation buffers of the CPU path, reused from op to op within a forward pass: a fresh
//! buffer of tens of MB costs a page fault per 4 KiB (and the kernel's zeroing) on first touch,
//! which at batch 8 is a sizeable share of an EfficientNet block. Only large buffers are kept,
//! a few at a time, and all are freed when a forward pass is read back, so resident memory
//! between passes is the weights alone.

use std::sync::Mutex;

/// Smaller buffers come and go through the allocator as usual.
const MIN_BYTES: usize = 1 << 20;
/// Freed buffers kept at most (the largest ones).
const KEEP: usize = 2;

static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// `len` zeros, in a kept buffer of `len` to `2 len` values where there is one.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    if len.saturating_mul(4) >= MIN_BYTES {
        let reused = FREE.lock().ok().and_then(|mut free| {
            let fits = |v: &Vec<f32>| v.capacity() >= len && v.capacity() / 2 <= len;
            let i = (0..free.len()).filter(|&i| fits(&free[i])).min_by_key(|&i| free[i].capacity())?;
            Some(free.swap_remove(i))
        });
        if let Some(mut v) = reused {
            v.clear();
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0; len]
}

/// Gives a buffer back for [`zeros`] to reuse (dropped when small, or when more are kept).
pub(crate) fn recycle(v: Vec<f32>) {
    if v.capacity().saturating_mul(4) < MIN_BYTES {
        return;
    }
    if let Ok(mut free) = FREE.lock() {
        free.push(v);
        if free.len() > KEEP {
            if let Some(i) = (0..free.len()).min_by_key(|&i| free[i].capacity()) {
                free.swap_remove(i);
            }
        }
    }
}

/// Frees every kept buffer.
pub(crate) fn release() {
    if let Ok(mut free) = FREE.lock() {
        free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cpu_test;

    cpu_test!(reused_buffers_come_back_zeroed_and_sized, {
        let n = MIN_BYTES; // 4 MiB of f32
        let mut v = zeros(n);
        v.iter_mut().for_each(|x| *x = 7.0);
        recycle(v);
        let w = zeros(n - 5);
        assert_eq!(w.len(), n - 5);
        assert!(w.iter().all(|x| *x == 0.0));
        // A small request is not served from a much larger buffer.
        recycle(w);
        assert_eq!(zeros(100).capacity(), 100);
        release();
    });
}
