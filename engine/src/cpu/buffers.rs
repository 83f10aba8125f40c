//! Activation buffers of the CPU path, reused from op to op and from one forward pass to the
//! next: a fresh buffer of tens of MB costs a page fault per 4 KiB and the kernel's zeroing on
//! first touch, 8-10% of a photo on the CPU path when every pass started afresh. Only large
//! buffers are kept, a few at a time; a kept buffer that no op took during a whole pass is
//! freed when the pass is read back, so between passes resident memory is the weights plus the
//! buffers one pass of the same kind uses (see the README for the figure).

use std::sync::Mutex;

/// Smaller buffers come and go through the allocator as usual.
const MIN_BYTES: usize = 1 << 20;
/// Freed buffers kept at most (the largest ones).
const KEEP: usize = 8;

/// Freed large buffers, each with whether it was given back since the last [`end_pass`].
#[derive(Default)]
struct Pool {
    kept: Vec<(Vec<f32>, bool)>,
}

impl Pool {
    /// `len` values: a kept buffer with its old values (see [`for_output`]), or new zeros.
    fn output(&mut self, len: usize) -> Vec<f32> {
        match self.take(len) {
            Some(mut v) => {
                v.truncate(len);
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// A kept buffer of `len` to `2 len` values, the smallest, for a large request.
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        if len.saturating_mul(4) < MIN_BYTES {
            return None;
        }
        let fits = |v: &Vec<f32>| v.capacity() >= len && v.capacity() / 2 <= len;
        let i = (0..self.kept.len()).filter(|&i| fits(&self.kept[i].0)).min_by_key(|&i| self.kept[i].0.capacity())?;
        Some(self.kept.swap_remove(i).0)
    }

    fn give(&mut self, v: Vec<f32>) {
        if v.capacity().saturating_mul(4) < MIN_BYTES {
            return;
        }
        self.kept.push((v, true));
        if self.kept.len() > KEEP {
            if let Some(i) = (0..self.kept.len()).min_by_key(|&i| self.kept[i].0.capacity()) {
                self.kept.swap_remove(i);
            }
        }
    }

    fn end_pass(&mut self) {
        self.kept.retain(|(_, used)| *used);
        self.kept.iter_mut().for_each(|(_, used)| *used = false);
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool { kept: Vec::new() });

/// `len` values for an op that writes every one: a kept buffer keeps the values it had (no
/// zeroing pass over tens of MB: 3% of an image on the CPU path); a new one is zeros.
pub(crate) fn for_output(len: usize) -> Vec<f32> {
    match POOL.lock() {
        Ok(mut pool) => pool.output(len),
        Err(_) => vec![0.0; len],
    }
}

/// Gives a buffer back for [`for_output`] to reuse (dropped when small, or when more are kept).
pub(crate) fn recycle(v: Vec<f32>) {
    if let Ok(mut pool) = POOL.lock() {
        pool.give(v);
    }
}

/// The end of a forward pass: frees the kept buffers that no op took or gave back since the
/// last one.
pub(crate) fn end_pass() {
    if let Ok(mut pool) = POOL.lock() {
        pool.end_pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cpu_test;

    cpu_test!(reused_buffers_come_back_sized, {
        // A pool of its own (as below): the shared one is used by tests running beside this one.
        let mut pool = Pool::default();
        let n = MIN_BYTES + 77;
        let mut v = pool.output(n);
        assert!(v.iter().all(|x| *x == 0.0), "a new buffer is zeros");
        // A kept buffer comes back sized, its old values kept (the op overwrites them).
        v.iter_mut().for_each(|x| *x = 3.0);
        pool.give(v);
        let o = pool.output(n - 9);
        assert_eq!(o.len(), n - 9);
        assert!(o.iter().all(|x| *x == 3.0));
        pool.give(o);
        // Longer than it was, within its capacity: the values past its old length are zeros.
        let o = pool.output(n - 2);
        assert_eq!(o.len(), n - 2);
        assert!(o[..n - 9].iter().all(|x| *x == 3.0) && o[n - 9..].iter().all(|x| *x == 0.0));
        // A small request is not served from a much larger buffer.
        pool.give(o);
        assert_eq!(pool.output(100).capacity(), 100);
        assert_eq!(pool.kept.len(), 1);
    });

    cpu_test!(a_buffer_no_pass_used_is_freed, {
        let mut pool = Pool::default();
        let (a, b) = (vec![0f32; MIN_BYTES], vec![0f32; 2 * MIN_BYTES]);
        pool.give(a);
        pool.give(b);
        pool.end_pass();
        // The next pass takes the smaller one and gives it back; the larger one idles.
        let a = pool.take(MIN_BYTES - 1).expect("a kept buffer");
        assert_eq!(a.capacity(), MIN_BYTES);
        pool.give(a);
        pool.end_pass();
        let caps: Vec<usize> = pool.kept.iter().map(|(v, _)| v.capacity()).collect();
        assert_eq!(caps, [MIN_BYTES], "the idle buffer is freed, the used one kept");
        // Small buffers are never kept, and at most KEEP are.
        pool.give(vec![0f32; 10]);
        (0..KEEP + 3).for_each(|i| pool.give(vec![0f32; MIN_BYTES + i]));
        assert_eq!(pool.kept.len(), KEEP);
        assert!(pool.kept.iter().all(|(v, _)| v.capacity() > MIN_BYTES + 2), "the smallest are dropped");
    });
}
