//! Uniform structs are declared once, in Rust, with [`uniform_struct!`]; the WGSL declaration a
//! kernel sees is generated from the same field list, so the two layouts cannot drift apart.
//! Fields are 4-byte scalars (`u32`, `i32`, `f32`), which makes the host layout (`repr(C)`) and
//! the WGSL uniform layout identical without padding rules.

/// A 4-byte scalar allowed in a uniform struct, with its WGSL type name.
pub(crate) trait WgslScalar: bytemuck::Pod {
    const WGSL: &'static str;
}
impl WgslScalar for u32 {
    const WGSL: &'static str = "u32";
}
impl WgslScalar for i32 {
    const WGSL: &'static str = "i32";
}
impl WgslScalar for f32 {
    const WGSL: &'static str = "f32";
}

/// A host struct that a kernel reads as `var<uniform> params: <Name>`.
pub(crate) trait Uniform: bytemuck::Pod {
    /// The WGSL `struct` declaration, derived from the Rust fields.
    fn wgsl_struct() -> String;
    /// The bytes to upload, padded to 16 bytes (uniform bindings are sized in 16-byte units).
    fn padded_bytes(&self) -> Vec<u8> {
        let mut bytes = bytemuck::bytes_of(self).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        bytes
    }
}

/// Declares a uniform struct once: the Rust type (crate-visible) and its WGSL twin.
macro_rules! uniform_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $(pub $field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name { $(pub $field: $ty),+ }

        impl $crate::uniforms::Uniform for $name {
            fn wgsl_struct() -> String {
                let mut s = format!("struct {} {{\n", stringify!($name));
                $(s.push_str(&format!("    {}: {},\n", stringify!($field),
                    <$ty as $crate::uniforms::WgslScalar>::WGSL));)+
                s.push_str("}\n");
                s
            }
        }
    };
}
pub(crate) use uniform_struct;

#[cfg(test)]
mod tests {
    use super::Uniform;

    super::uniform_struct! {
        /// Example.
        pub struct Example { pub a: u32, pub b: f32, pub c: i32 }
    }

    #[test]
    fn wgsl_matches_rust_fields() {
        assert_eq!(Example::wgsl_struct(), "struct Example {\n    a: u32,\n    b: f32,\n    c: i32,\n}\n");
        assert_eq!(Example { a: 1, b: 2.0, c: 3 }.padded_bytes().len(), 16);
    }
}
