//! Where a forward pass spends the GPU: per kernel family, dispatches, bytes bound, FLOPs and
//! (where the adapter has timestamp queries) GPU time. Off unless [`Gpu::start_profile`] is called:
//! profiling puts every dispatch in its own compute pass, which costs a little.
//!
//! [`Gpu::start_profile`]: crate::Gpu::start_profile

use std::collections::BTreeMap;

/// One kernel family's share of the work recorded since profiling started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FamilyProfile {
    /// The kernel's file in `shaders/` (`matmul`, `depthwise`, ...).
    pub family: &'static str,
    pub dispatches: u64,
    /// Bytes of intermediate tensors bound (read or written), the traffic a fused kernel saves.
    pub activation_bytes: u64,
    /// Bytes of weights bound.
    pub weight_bytes: u64,
    /// 2 x multiply-adds, for the families that dominate the cost (matmul, conv, attention).
    pub flops: u64,
    /// GPU time between the start and end of its dispatches; `None` without timestamp queries.
    pub gpu_ns: Option<u64>,
}

/// Every family's [`FamilyProfile`], largest GPU time (else most bytes) first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub families: Vec<FamilyProfile>,
}

impl Profile {
    pub fn dispatches(&self) -> u64 {
        self.families.iter().map(|f| f.dispatches).sum()
    }

    pub fn activation_bytes(&self) -> u64 {
        self.families.iter().map(|f| f.activation_bytes).sum()
    }

    pub fn weight_bytes(&self) -> u64 {
        self.families.iter().map(|f| f.weight_bytes).sum()
    }

    /// Total GPU time, when every family has one.
    pub fn gpu_ns(&self) -> Option<u64> {
        self.families.iter().map(|f| f.gpu_ns).sum()
    }
}

/// What [`crate::Pass`] adds to while profiling is on.
#[derive(Default)]
pub(crate) struct Recorder {
    families: BTreeMap<&'static str, FamilyProfile>,
    /// The family of the last dispatch, to which an op's FLOPs are credited.
    last: Option<&'static str>,
}

impl Recorder {
    pub(crate) fn dispatch(&mut self, family: &'static str, activation_bytes: u64, weight_bytes: u64) {
        let f = self.families.entry(family).or_insert_with(|| FamilyProfile { family, ..Default::default() });
        f.dispatches += 1;
        f.activation_bytes += activation_bytes;
        f.weight_bytes += weight_bytes;
        self.last = Some(family);
    }

    pub(crate) fn flops(&mut self, flops: u64) {
        if let Some(f) = self.last.and_then(|l| self.families.get_mut(l)) {
            f.flops += flops;
        }
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // timed passes are native only
    pub(crate) fn gpu_time(&mut self, family: &'static str, ns: u64) {
        if let Some(f) = self.families.get_mut(family) {
            *f.gpu_ns.get_or_insert(0) += ns;
        }
    }

    pub(crate) fn finish(self) -> Profile {
        let mut families: Vec<FamilyProfile> = self.families.into_values().collect();
        families.sort_by_key(|f| std::cmp::Reverse((f.gpu_ns.unwrap_or(0), f.activation_bytes + f.weight_bytes)));
        Profile { families }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_go_to_the_family_of_the_last_dispatch_and_totals_add_up() {
        let mut r = Recorder::default();
        r.flops(5); // nothing recorded yet: dropped, not misattributed
        r.dispatch("matmul", 100, 1000);
        r.flops(7);
        r.dispatch("layer_norm", 10, 1);
        r.dispatch("matmul", 100, 1000);
        r.flops(7);
        r.gpu_time("matmul", 30);
        r.gpu_time("layer_norm", 3);
        let p = r.finish();
        assert_eq!(p.families[0].family, "matmul");
        assert_eq!((p.families[0].dispatches, p.families[0].flops, p.families[0].gpu_ns), (2, 14, Some(30)));
        assert_eq!((p.dispatches(), p.activation_bytes(), p.weight_bytes(), p.gpu_ns()), (3, 210, 2001, Some(33)));
    }
}
