use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error("no GPU adapter found ({0}); the CPU path can still run the model")]
    NoAdapter(String),
    #[error("the GPU adapter refused the device: {0}")]
    Device(String),
    #[error("tensor of {bytes} bytes does not fit this adapter: {limit_name} is {limit} bytes")]
    TooLarge { bytes: u64, limit_name: &'static str, limit: u64 },
    #[error("shape error: {0}")]
    Shape(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("model: {0}")]
    Model(String),
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
}

/// Returns `Err(Error::Shape)` with a formatted message when `cond` is false.
macro_rules! ensure_shape {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::error::Error::Shape(format!($($arg)*)));
        }
    };
}
pub(crate) use ensure_shape;
