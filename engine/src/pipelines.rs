//! Shader assembly and the pipeline cache.
//!
//! A kernel's module is: `enable f16;` (only for f16 variants), the uniform struct derived from
//! its Rust twin, `shaders/common.wgsl`, then its own file with `#ifdef` blocks resolved for the
//! variant's defines. Each (file, entry, defines) is compiled once per device.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::uniforms::Uniform;

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Snippets a kernel pulls in with `#include NAME`, or `#include NAME as IDENT` to replace the
/// snippet's upper-case NAME (say `WEIGHTS`) with IDENT, for a snippet used on several arrays.
const INCLUDES: &[(&str, &str)] = &[
    ("workgroup_reduce", include_str!("../../shaders/workgroup_reduce.wgsl")),
    ("weights", include_str!("../../shaders/weights.wgsl")),
];

/// A compute entry point in one of `shaders/*.wgsl`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel {
    pub file: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
}

/// Declares a [`Kernel`] from `shaders/<file>.wgsl` (from a file in `src/ops/`).
macro_rules! kernel {
    ($file:literal, $entry:literal) => {
        $crate::pipelines::Kernel {
            file: $file,
            source: include_str!(concat!("../../../shaders/", $file, ".wgsl")),
            entry: $entry,
        }
    };
}
pub(crate) use kernel;

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<String, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub(crate) fn get<P: Uniform>(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        defines: &[&str],
    ) -> wgpu::ComputePipeline {
        let key = format!("{}:{}:{}", kernel.file, kernel.entry, defines.join(","));
        if let Some(p) = self.map.lock().unwrap().get(&key) {
            return p.clone();
        }
        let source = assemble::<P>(kernel, defines);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.map.lock().unwrap().insert(key, pipeline.clone());
        pipeline
    }
}

pub(crate) fn assemble<P: Uniform>(kernel: &Kernel, defines: &[&str]) -> String {
    let mut out = String::new();
    if defines.contains(&"F16") {
        out.push_str("enable f16;\n");
    }
    out.push_str(&P::wgsl_struct());
    out.push_str(COMMON);
    out.push_str(&preprocess(kernel.source, defines));
    out
}

/// Resolves `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif` (nestable) for the given defines,
/// and `#include NAME` from [`INCLUDES`].
pub(crate) fn preprocess(source: &str, defines: &[&str]) -> String {
    let mut out = String::with_capacity(source.len());
    // Each level: (this branch is active, the enclosing level is active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool)>| stack.last().is_none_or(|&(a, p)| a && p);
    for line in source.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("#ifdef ") {
            let parent = active(&stack);
            stack.push((defines.contains(&name.trim()), parent));
        } else if let Some(name) = t.strip_prefix("#ifndef ") {
            let parent = active(&stack);
            stack.push((!defines.contains(&name.trim()), parent));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().expect("#else without #ifdef");
            top.0 = !top.0;
        } else if t.starts_with("#endif") {
            stack.pop().expect("#endif without #ifdef");
        } else if let Some(what) = t.strip_prefix("#include ") {
            if active(&stack) {
                let (name, ident) = match what.split_once(" as ") {
                    Some((name, ident)) => (name.trim(), Some(ident.trim())),
                    None => (what.trim(), None),
                };
                let (_, text) = INCLUDES.iter().find(|(n, _)| *n == name).expect("#include of an unknown snippet");
                // The snippet's own #ifdefs follow the kernel's defines.
                let text = preprocess(text, defines);
                match ident {
                    Some(ident) => out.push_str(&text.replace(&name.to_uppercase(), ident)),
                    None => out.push_str(&text),
                }
            }
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(stack.is_empty(), "unterminated #ifdef");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn preprocess_nests() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf";
        assert_eq!(super::preprocess(src, &["X"]), "a\nb\nc\nf\n");
        assert_eq!(super::preprocess(src, &["X", "Y"]), "a\nb\nd\nf\n");
        assert_eq!(super::preprocess(src, &[]), "a\ne\nf\n");
    }

    #[test]
    fn includes_follow_the_defines_and_take_a_name() {
        let out = super::preprocess("#include weights as w2\n", &["WQ8"]);
        assert!(out.contains("fn w2_at(") && out.contains("w2[rows * row_words"), "{out}");
        assert!(!out.contains("WEIGHTS") && !out.contains("unpack2x16float"), "{out}");
    }
}
