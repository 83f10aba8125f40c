//! How long the UI waits for the engine worker to read one photo before it takes the worker as
//! stuck: scaled to the measured time per photo (20 times the running median, at least a floor),
//! with a generous allowance for a worker's first photo (it compiles the GPU pipelines) and for
//! the time before anything was measured.

use std::collections::VecDeque;

/// The allowance for a worker's first photo, and before any photo was measured.
pub const FIRST_PHOTO_MS: f64 = 300_000.0;
/// The least time allowed for one photo once photos were measured.
pub const FLOOR_MS: f64 = 30_000.0;
/// How many times the median time per photo a photo may take.
pub const FACTOR: f64 = 20.0;
/// How many recent times the median is taken over.
const WINDOW: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct Watchdog {
    times_ms: VecDeque<f64>,
}

impl Watchdog {
    /// Records how long a photo took on a worker that had read one before.
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if self.times_ms.len() == WINDOW {
            self.times_ms.pop_front();
        }
        self.times_ms.push_back(ms);
    }

    pub fn median_ms(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.times_ms.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
    }

    /// The time allowed for the next photo: `first_on_worker` when the worker has read none yet;
    /// `floor_ms` is [`FLOOR_MS`] except in tests.
    pub fn limit_ms(&self, first_on_worker: bool, floor_ms: f64) -> f64 {
        match self.median_ms() {
            None => FIRST_PHOTO_MS,
            Some(m) => {
                let normal = (FACTOR * m).max(floor_ms);
                if first_on_worker {
                    normal.max(FIRST_PHOTO_MS)
                } else {
                    normal
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_with_the_median_and_allows_the_first_photo_more() {
        let mut w = Watchdog::default();
        assert_eq!(w.limit_ms(false, FLOOR_MS), FIRST_PHOTO_MS);
        for ms in [400.0, 500.0, 600.0, 90_000.0] {
            w.record(ms);
        }
        // Median 550 ms: 20 x 550 = 11 s, under the floor.
        assert_eq!(w.median_ms(), Some(550.0));
        assert_eq!(w.limit_ms(false, FLOOR_MS), FLOOR_MS);
        assert_eq!(w.limit_ms(false, 5_000.0), 11_000.0);
        assert_eq!(w.limit_ms(true, FLOOR_MS), FIRST_PHOTO_MS);
        // Slow photos (a big model on the CPU path): 20 x 10 s.
        for _ in 0..10 {
            w.record(10_000.0);
        }
        assert_eq!(w.limit_ms(false, FLOOR_MS), 200_000.0);
        assert_eq!(w.limit_ms(true, FLOOR_MS), FIRST_PHOTO_MS);
        w.record(f64::NAN);
        w.record(-1.0);
        assert_eq!(w.times_ms.len(), 14);
    }

    #[test]
    fn keeps_a_window_of_recent_times() {
        let mut w = Watchdog::default();
        for _ in 0..WINDOW {
            w.record(100_000.0);
        }
        for _ in 0..WINDOW {
            w.record(100.0);
        }
        assert_eq!(w.median_ms(), Some(100.0));
    }
}
