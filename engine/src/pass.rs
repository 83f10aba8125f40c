//! A pass records the dispatches of one forward pass and submits them together: one uniform
//! buffer for every dispatch's parameters, one command buffer, one `queue.submit`.

use crate::pipelines::Kernel;
use crate::tensor::Tensor;
use crate::uniforms::Uniform;
use crate::Gpu;

/// Workgroups above this count in one dimension are folded into a second dimension.
pub(crate) const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

struct Dispatch {
    /// The kernel's file, for timed passes (native only).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    family: &'static str,
    pipeline: wgpu::ComputePipeline,
    uniform_offset: u64,
    uniform_size: u64,
    buffers: Vec<wgpu::Buffer>,
    workgroups: [u32; 3],
}

/// The dispatches of one forward pass, submitted together by [`Pass::submit`].
pub struct Pass {
    gpu: Gpu,
    dispatches: Vec<Dispatch>,
    uniforms: Vec<u8>,
}

impl Pass {
    pub fn new(gpu: &Gpu) -> Self {
        Self { gpu: gpu.clone(), dispatches: Vec::new(), uniforms: Vec::new() }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Records one dispatch. Binding 0 is `params`; bindings 1.. are `tensors` in order.
    pub(crate) fn dispatch<P: Uniform>(
        &mut self,
        kernel: &Kernel,
        defines: &[&str],
        params: &P,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) {
        let pipeline = self.gpu.pipelines.get::<P>(&self.gpu.device, kernel, defines);
        let align = self.gpu.limits().min_uniform_buffer_offset_alignment as usize;
        let offset = self.uniforms.len().div_ceil(align) * align;
        let bytes = params.padded_bytes();
        self.uniforms.resize(offset, 0);
        self.uniforms.extend_from_slice(&bytes);
        if let Some(recorder) = self.gpu.profiler.lock().unwrap().as_mut() {
            let (act, weights) = tensors.iter().fold((0, 0), |(a, w), t| {
                if t.is_activation() {
                    (a + t.bound_bytes(), w)
                } else {
                    (a, w + t.bound_bytes())
                }
            });
            recorder.dispatch(kernel.file, act, weights);
        }
        self.dispatches.push(Dispatch {
            family: kernel.file,
            pipeline,
            uniform_offset: offset as u64,
            uniform_size: bytes.len() as u64,
            buffers: tensors.iter().map(|t| t.buffer().clone()).collect(),
            workgroups,
        });
    }

    /// Credits `flops` to the kernel family of the last dispatch, while profiling.
    pub(crate) fn note_flops(&self, flops: u64) {
        if let Some(recorder) = self.gpu.profiler.lock().unwrap().as_mut() {
            recorder.flops(flops);
        }
    }

    /// Splits `count` workgroups over x and y so that neither exceeds the per-dimension limit.
    /// Kernels recover the linear index with `linear_workgroup` in `common.wgsl`.
    pub(crate) fn grid(count: u32) -> [u32; 3] {
        if count <= MAX_WORKGROUPS_PER_DIM {
            [count.max(1), 1, 1]
        } else {
            let y = count.div_ceil(MAX_WORKGROUPS_PER_DIM);
            [count.div_ceil(y), y, 1]
        }
    }

    /// Encodes everything recorded into one command buffer and submits it.
    pub fn submit(self) -> crate::Result<()> {
        if self.dispatches.is_empty() {
            return Ok(());
        }
        let device = &self.gpu.device;
        let uniform = wgpu::util::DeviceExt::create_buffer_init(
            device,
            &wgpu::util::BufferInitDescriptor {
                label: Some("brivl params"),
                contents: &self.uniforms,
                usage: wgpu::BufferUsages::UNIFORM,
            },
        );
        let bind_groups: Vec<wgpu::BindGroup> = self
            .dispatches
            .iter()
            .map(|d| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniform,
                        offset: d.uniform_offset,
                        size: wgpu::BufferSize::new(d.uniform_size),
                    }),
                }];
                for (i, b) in d.buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &d.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            })
            .collect();
        #[cfg(not(target_arch = "wasm32"))]
        if self.gpu.has_timestamps() && self.gpu.profiling() {
            self.gpu.pool.end_pass();
            return self.submit_timed(&bind_groups);
        }
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("brivl pass") });
        {
            let mut cpass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for (d, bg) in self.dispatches.iter().zip(&bind_groups) {
                cpass.set_pipeline(&d.pipeline);
                cpass.set_bind_group(0, bg, &[]);
                let [x, y, z] = d.workgroups;
                cpass.dispatch_workgroups(x, y, z);
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.pool.end_pass();
        self.gpu.take_errors()
    }

    /// Profiling: each dispatch in a compute pass of its own with timestamps at its start and
    /// end, read back before returning, credited to its kernel family. Native only (it waits).
    #[cfg(not(target_arch = "wasm32"))]
    fn submit_timed(&self, bind_groups: &[wgpu::BindGroup]) -> crate::Result<()> {
        use crate::Error;
        let device = &self.gpu.device;
        // A query set holds at most 4096 timestamps: time the dispatches in chunks.
        const PER_CHUNK: usize = 2048;
        for (chunk, groups) in self.dispatches.chunks(PER_CHUNK).zip(bind_groups.chunks(PER_CHUNK)) {
            let count = 2 * chunk.len() as u32;
            let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("brivl profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let size = u64::from(count) * wgpu::QUERY_SIZE as u64;
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("brivl profile resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("brivl profile readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            for (i, (d, bg)) in chunk.iter().zip(groups).enumerate() {
                let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.family),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                cpass.set_pipeline(&d.pipeline);
                cpass.set_bind_group(0, bg, &[]);
                let [x, y, z] = d.workgroups;
                cpass.dispatch_workgroups(x, y, z);
            }
            encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
            encoder.copy_buffer_to_buffer(&resolved, 0, &staging, 0, size);
            self.gpu.queue.submit([encoder.finish()]);
            staging.map_async(wgpu::MapMode::Read, .., |_| {});
            device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
            self.gpu.take_errors()?;
            let ticks: Vec<u64> = {
                let view = staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
                bytemuck::cast_slice(&view).to_vec()
            };
            let period = f64::from(self.gpu.queue.get_timestamp_period());
            if let Some(recorder) = self.gpu.profiler.lock().unwrap().as_mut() {
                for (d, t) in chunk.iter().zip(ticks.chunks_exact(2)) {
                    recorder.gpu_time(d.family, (t[1].saturating_sub(t[0]) as f64 * period) as u64);
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use crate::ops::elementwise::add;
    use crate::{Gpu, Pass, Tensor};

    #[test]
    fn a_profile_counts_dispatches_and_bytes_per_family_until_taken() {
        // A device of its own: other tests' passes on the shared one would be counted too.
        let gpu = pollster::block_on(Gpu::new()).unwrap();
        let n = 1001;
        let a = Tensor::from_f32(&gpu, &[n], &vec![1.0; n]).unwrap();
        gpu.start_profile();
        let mut pass = Pass::new(&gpu);
        let c = add(&mut pass, &a, &a).unwrap(); // two uploads in, one activation out
        let d = add(&mut pass, &c, &a).unwrap(); // one of each in, one activation out
        pass.submit().unwrap();
        let p = gpu.take_profile().unwrap();
        let bytes = 4 * n as u64;
        assert_eq!(p.families.len(), 1);
        assert_eq!((p.families[0].family, p.dispatches()), ("elementwise", 2));
        assert_eq!((p.activation_bytes(), p.weight_bytes()), (3 * bytes, 3 * bytes));
        if gpu.has_timestamps() {
            assert!(p.gpu_ns().is_some(), "the adapter has timestamps but no time was read");
        }
        assert_eq!(pollster::block_on(d.read_f32(&gpu)).unwrap(), vec![3.0; n], "timed passes compute the same");
        let mut pass = Pass::new(&gpu);
        add(&mut pass, &a, &a).unwrap();
        pass.submit().unwrap();
        assert!(gpu.take_profile().is_none(), "profiling stops when taken");
    }
}
