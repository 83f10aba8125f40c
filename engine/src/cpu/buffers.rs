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
    match reuse(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// `len` values for an op that writes every one: a kept buffer keeps the values it had (no
/// zeroing pass over tens of MB: 3% of an image on the CPU path); a new one is zeros.
pub(crate) fn for_output(len: usize) -> Vec<f32> {
    match reuse(len) {
        Some(mut v) => {
            v.truncate(len);
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// A kept buffer of `len` to `2 len` values, the smallest, for a large request.
fn reuse(len: usize) -> Option<Vec<f32>> {
    if len.saturating_mul(4) < MIN_BYTES {
        return None;
    }
    let mut free = FREE.lock().ok()?;
    let fits = |v: &Vec<f32>| v.capacity() >= len && v.capacity() / 2 <= len;
    let i = (0..free.len()).filter(|&i| fits(&free[i])).min_by_key(|&i| free[i].capacity())?;
    Some(free.swap_remove(i))
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
        // An output buffer comes back sized, its old values kept (the op overwrites them).
        let mut o = w;
        o.iter_mut().for_each(|x| *x = 3.0);
        recycle(o);
        let o = for_output(n - 9);
        assert_eq!(o.len(), n - 9);
        assert!(o.iter().all(|x| *x == 3.0));
        // A small request is not served from a much larger buffer.
        recycle(o);
        assert_eq!(zeros(100).capacity(), 100);
        release();
    });
}
