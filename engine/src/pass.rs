//! A pass records the dispatches of one forward pass and submits them together: one uniform
//! buffer for every dispatch's parameters, one command buffer, one `queue.submit`.

use crate::pipelines::Kernel;
use crate::tensor::Tensor;
use crate::uniforms::Uniform;
use crate::Gpu;

/// Workgroups above this count in one dimension are folded into a second dimension.
pub(crate) const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

struct Dispatch {
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
        self.dispatches.push(Dispatch {
            pipeline,
            uniform_offset: offset as u64,
            uniform_size: bytes.len() as u64,
            buffers: tensors.iter().map(|t| t.buffer().clone()).collect(),
            workgroups,
        });
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
        self.gpu.take_errors()
    }
}
