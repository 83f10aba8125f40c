// Tree reductions over one workgroup, pulled in with `#include workgroup_reduce`. The including
// kernel declares `const WG: u32` (its workgroup size, a power of two), `alias ReduceT` (f32, or
// a vector of f32s reduced component by component) and `var<workgroup> partial: array<ReduceT,
// WG>`. Every thread of the workgroup must call them.

// Max (is_max) or sum of `v` over the workgroup.
fn workgroup_reduce(tid: u32, v: ReduceT, is_max: bool) -> ReduceT {
    partial[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let a = partial[tid];
            let b = partial[tid + s];
            partial[tid] = select(a + b, max(a, b), is_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone reads the result before `partial` is reused by the next reduction.
    workgroupBarrier();
    return total;
}

fn workgroup_sum(tid: u32, v: ReduceT) -> ReduceT {
    return workgroup_reduce(tid, v, false);
}
