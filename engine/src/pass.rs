//! A pass records the dispatches of one forward pass and submits them together: one uniform
//! buffer for every dispatch's parameters, one command buffer, one `queue.submit`.

use crate::bind_groups::Bindings;
use crate::pipelines::Kernel;
use crate::tensor::{Readback, Tensor};
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
    /// Binding number and buffer of each tensor.
    buffers: Vec<(u32, wgpu::Buffer)>,
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
        let slots: Vec<Option<&Tensor>> = tensors.iter().copied().map(Some).collect();
        self.dispatch_slots(kernel, defines, params, &slots, workgroups);
    }

    /// Records one dispatch whose kernel has optional bindings: slot `i` is binding `i + 1`,
    /// and a `None` slot leaves its binding out (the kernel's defines drop its declaration).
    pub(crate) fn dispatch_slots<P: Uniform>(
        &mut self,
        kernel: &Kernel,
        defines: &[&str],
        params: &P,
        slots: &[Option<&Tensor>],
        workgroups: [u32; 3],
    ) {
        let tensors: Vec<&Tensor> = slots.iter().flatten().copied().collect();
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
            buffers: slots
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (i as u32 + 1, t.buffer().clone())))
                .collect(),
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
        self.submit_reading(None).map(drop)
    }

    /// Submits, with a copy of `t` for the host in the same command buffer: the copy can be read
    /// while later passes run. `t` must be f32.
    pub(crate) fn submit_and_read(self, t: &Tensor) -> crate::Result<Readback> {
        if t.dtype() != crate::DType::F32 {
            return Err(crate::Error::Shape(format!("read_f32 on a {:?} tensor", t.dtype())));
        }
        let gpu = self.gpu.clone();
        match self.submit_reading(Some(t))? {
            Some(r) => Ok(r),
            // Nothing recorded, or a timed pass: copy on its own.
            None => {
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                let r = Readback::record(&gpu, &mut encoder, t);
                gpu.queue.submit([encoder.finish()]);
                Ok(r.start())
            }
        }
    }

    fn submit_reading(self, read: Option<&Tensor>) -> crate::Result<Option<Readback>> {
        if self.dispatches.is_empty() {
            return Ok(None);
        }
        let device = &self.gpu.device;
        // Held until submitted: the parameters of this pass stay in the uniform buffer until then.
        let mut cache = self.gpu.bind_groups.lock().unwrap();
        let bind_groups = cache.prepare(
            device,
            &self.gpu.queue,
            &self.uniforms,
            self.dispatches.iter().map(|d| Bindings {
                pipeline: &d.pipeline,
                uniform_offset: d.uniform_offset,
                uniform_size: d.uniform_size,
                buffers: &d.buffers,
            }),
        );
        #[cfg(not(target_arch = "wasm32"))]
        if self.gpu.has_timestamps() && self.gpu.profiling() {
            self.gpu.pool.end_pass();
            return self.submit_timed(&bind_groups).map(|_| None);
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
        let readback = read.map(|t| Readback::record(&self.gpu, &mut encoder, t));
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.pool.end_pass();
        self.gpu.take_errors()?;
        Ok(readback.map(Readback::start))
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

    #[test]
    fn a_repeated_pass_reuses_its_bind_groups_and_computes_the_same() {
        let gpu = pollster::block_on(Gpu::new()).unwrap();
        let n = 777;
        let a = Tensor::from_f32(&gpu, &[n], &(0..n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let forward = |scale: usize| {
            let mut pass = Pass::new(&gpu);
            let mut x = add(&mut pass, &a, &a).unwrap();
            for _ in 1..scale {
                x = add(&mut pass, &x, &a).unwrap();
            }
            pass.submit().unwrap();
            pollster::block_on(x.read_f32(&gpu)).unwrap()
        };
        let counts = || gpu.bind_groups.lock().unwrap().counts();
        let first = forward(3);
        let (made, reused, _) = counts();
        assert_eq!((made, reused), (3, 0));
        assert_eq!(forward(3), first);
        assert_eq!(counts().0, made, "the second pass made no bind group");
        assert_eq!(counts().1, 3);
        // Another shape of pass, then more parameters than the uniform buffer held: right results.
        assert_eq!(forward(1)[5], 10.0);
        let long = forward(40);
        assert_eq!(long[5], 5.0 * 41.0);
        // Entries unused for two passes are dropped.
        forward(1);
        forward(1);
        assert!(counts().2 <= 3, "{:?}", counts());
    }
}
