//! Bind groups kept across passes. A forward pass at a given batch size records the same
//! dispatches on the same buffers every time (weights are fixed, the pool hands intermediates out
//! in the same order), so its bind groups can be made once, provided the parameters live in one
//! persistent uniform buffer at the same offsets. Entries unused for two passes are dropped, so
//! per-pass uploads (pixels, token ids) do not stay alive through the cache.

use std::collections::HashMap;

#[derive(PartialEq, Eq, Hash)]
struct Key {
    pipeline: wgpu::ComputePipeline,
    uniform_offset: u64,
    uniform_size: u64,
    buffers: Vec<(u32, wgpu::Buffer)>,
}

/// One dispatch's bindings: its pipeline, its parameters' range and its tensors' buffers.
pub(crate) struct Bindings<'a> {
    pub pipeline: &'a wgpu::ComputePipeline,
    pub uniform_offset: u64,
    pub uniform_size: u64,
    /// Binding number and buffer of each tensor.
    pub buffers: &'a [(u32, wgpu::Buffer)],
}

#[derive(Default)]
pub(crate) struct BindGroupCache {
    uniform: Option<wgpu::Buffer>,
    groups: HashMap<Key, (wgpu::BindGroup, u64)>,
    pass: u64,
    /// Bind groups made and reused, for the tests.
    made: u64,
    reused: u64,
}

impl BindGroupCache {
    /// Writes `params` into the persistent uniform buffer (grown, and the cache emptied, when too
    /// small) and returns one bind group per dispatch. The caller submits before releasing the
    /// lock this lives under, so that no other pass rewrites the parameters in between.
    pub(crate) fn prepare<'a>(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        params: &[u8],
        dispatches: impl Iterator<Item = Bindings<'a>>,
    ) -> Vec<wgpu::BindGroup> {
        let needed = (params.len() as u64).max(256);
        if self.uniform.as_ref().is_none_or(|u| u.size() < needed) {
            self.groups.clear();
            self.uniform = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("brivl params"),
                size: needed.next_power_of_two(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let uniform = self.uniform.as_ref().expect("made above");
        // Ordered on the queue: passes submitted before read the old values, this one the new.
        queue.write_buffer(uniform, 0, params);
        self.pass += 1;
        let pass = self.pass;
        let groups: Vec<wgpu::BindGroup> = dispatches
            .map(|d| {
                let key = Key {
                    pipeline: d.pipeline.clone(),
                    uniform_offset: d.uniform_offset,
                    uniform_size: d.uniform_size,
                    buffers: d.buffers.to_vec(),
                };
                if let Some((group, used)) = self.groups.get_mut(&key) {
                    *used = pass;
                    self.reused += 1;
                    return group.clone();
                }
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: uniform,
                        offset: d.uniform_offset,
                        size: wgpu::BufferSize::new(d.uniform_size),
                    }),
                }];
                for (binding, b) in d.buffers {
                    entries.push(wgpu::BindGroupEntry { binding: *binding, resource: b.as_entire_binding() });
                }
                let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &d.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                self.made += 1;
                self.groups.insert(key, (group.clone(), pass));
                group
            })
            .collect();
        self.groups.retain(|_, (_, used)| *used + 2 > pass);
        groups
    }

    #[cfg(test)]
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // its test needs a native device
    pub(crate) fn counts(&self) -> (u64, u64, usize) {
        (self.made, self.reused, self.groups.len())
    }
}
