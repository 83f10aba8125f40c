//! Device setup: pick an adapter, ask for the limits the model needs, report what we got.
// wgpu's handles are Send + Sync natively but not on wasm, where there is one thread: the Arcs
// that share them are fine there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

use std::sync::{Arc, Mutex};

use crate::bind_groups::BindGroupCache;
use crate::pipelines::PipelineCache;
use crate::pool::{BufferPool, PoolBytes};
use crate::profile::{Profile, Recorder};
use crate::{Error, Result};

/// How to choose the device.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Use `shader-f16` kernels when the adapter has the feature. Off forces the f32 fallbacks.
    pub allow_f16: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self { allow_f16: true }
    }
}

/// A device, its queue, and the caches every op shares. Cloning shares them all.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// The device has `shader-f16` and the options allow it.
    f16: bool,
    pub(crate) pipelines: Arc<PipelineCache>,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) bind_groups: Arc<Mutex<BindGroupCache>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// The device has timestamp queries (requested whenever the adapter offers them). Read by
    /// timed passes, which block for the readback and so are native only.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    timestamps: bool,
    /// `Some` while profiling: what every pass adds to.
    pub(crate) profiler: Arc<Mutex<Option<Recorder>>>,
}

impl Gpu {
    pub async fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default()).await
    }

    pub async fn with_options(options: GpuOptions) -> Result<Self> {
        // WGPU_BACKEND and friends still let a user pick a backend on native.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;

        let info = adapter.get_info();
        let offered = adapter.limits();
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let f16 = has_f16 && options.allow_f16;
        // Only `brivl bench --profile` reads timestamps; asking for them costs nothing otherwise.
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        // Ask for everything the adapter offers where the model is limited by it: the largest
        // tensor (BERT's word embeddings) needs ~65 MB bindings in f32.
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: offered.max_storage_buffer_binding_size,
            max_buffer_size: offered.max_buffer_size,
            max_storage_buffers_per_shader_stage: offered.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: offered.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: offered.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: offered.max_compute_workgroup_size_x,
            max_compute_workgroup_size_y: offered.max_compute_workgroup_size_y,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("brivl"),
                required_features: {
                    let mut features = wgpu::Features::empty();
                    features.set(wgpu::Features::SHADER_F16, f16);
                    features.set(wgpu::Features::TIMESTAMP_QUERY, timestamps);
                    features
                },
                required_limits: required_limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));

        Ok(Self {
            pool: Arc::new(BufferPool::default()),
            bind_groups: Arc::new(Mutex::new(BindGroupCache::default())),
            pipelines: Arc::new(PipelineCache::default()),
            device,
            queue,
            info,
            limits: required_limits,
            f16,
            errors,
            timestamps,
            profiler: Arc::new(Mutex::new(None)),
        })
    }

    /// Starts counting dispatches, bytes and FLOPs per kernel family, and GPU time where the
    /// adapter has timestamp queries (read back natively only), until [`Gpu::take_profile`].
    pub fn start_profile(&self) {
        *self.profiler.lock().unwrap() = Some(Recorder::default());
    }

    /// What was recorded since [`Gpu::start_profile`]; profiling stops. `None` if not started.
    pub fn take_profile(&self) -> Option<Profile> {
        self.profiler.lock().unwrap().take().map(Recorder::finish)
    }

    /// Bytes of intermediate buffers held: in use, and free for the next pass.
    pub fn pool_bytes(&self) -> PoolBytes {
        self.pool.bytes()
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn profiling(&self) -> bool {
        self.profiler.lock().unwrap().is_some()
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// The adapter's name, vendor, backend and driver as the platform reports them.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was created with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether f16 weights are read as native `f16` (the adapter has `shader-f16` and the
    /// options allow it); otherwise they are unpacked from u32 words.
    pub fn has_f16(&self) -> bool {
        self.f16
    }

    /// The adapter runs on the CPU (lavapipe, SwiftShader, WARP): a workgroup's threads are SIMD
    /// lanes and a barrier a switch between groups of them, so some kernels take a CPU shape.
    pub(crate) fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// One line naming the adapter, for logs and benchmark tables.
    pub fn describe(&self) -> String {
        // Browsers hide adapter names; say what kind of adapter it is instead.
        let name = if self.info.name.is_empty() { "unnamed adapter" } else { &self.info.name };
        format!(
            "{} ({:?}, {:?}, driver {} {}), shader-f16: {}, max storage binding {} MiB",
            name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info,
            if self.f16 { "yes" } else { "no" },
            self.limits.max_storage_buffer_binding_size >> 20
        )
    }

    /// Refuses a buffer the adapter cannot bind, with the limit that stops it.
    pub(crate) fn check_fits(&self, bytes: u64) -> Result<()> {
        let binding = self.limits.max_storage_buffer_binding_size;
        if bytes > binding {
            return Err(Error::TooLarge { bytes, limit_name: "maxStorageBufferBindingSize", limit: binding });
        }
        if bytes > self.limits.max_buffer_size {
            return Err(Error::TooLarge { bytes, limit_name: "maxBufferSize", limit: self.limits.max_buffer_size });
        }
        Ok(())
    }

    /// Errors the device reported since the last call (validation, out of memory).
    pub(crate) fn take_errors(&self) -> Result<()> {
        let mut errors = self.errors.lock().unwrap();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Gpu(std::mem::take(&mut *errors).join("; ")))
        }
    }

    /// Blocks until the work submitted so far has finished (native only: a browser cannot
    /// block). For timing.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| Error::Gpu(e.to_string()))
    }
}
