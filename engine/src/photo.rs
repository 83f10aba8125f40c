//! Photo decoding: the bytes of a JPEG, PNG, WebP, GIF, BMP or TIFF file -> upright 8-bit RGB,
//! the image tower's step 1 before resizing (see `BRIVL_SPEC.md`, "Image tower").
//!
//! What it does, in order:
//! 1. **Sniff** the format from the first bytes (never from a file name). Anything else is
//!    [`PhotoError::UnknownFormat`], or [`PhotoError::Unsupported`] for formats it recognises but
//!    does not decode (HEIC/HEIF, AVIF, ICO, ...).
//! 2. **Read the header only** and refuse, before any pixel buffer exists, an image whose declared
//!    size is past [`PhotoLimits`] (default 100 megapixels, 100 000 pixels a side, 512 MiB for the
//!    decoder's buffer) with [`PhotoError::TooLarge`] naming the size.
//! 3. **Decode** with the `image` crate (first frame only for an animated GIF).
//! 4. **Convert to RGB the way PIL's `convert('RGB')` does**: alpha is dropped, not composited
//!    (a fully transparent pixel keeps its stored colour), grey is replicated to three channels,
//!    palettes are expanded (a GIF's transparent index keeps its palette colour), CMYK JPEGs come
//!    out as zune-jpeg's RGB (within 1 of PIL's on the fixture). 16-bit samples keep their **high byte** (`v >> 8`), which is what
//!    PIL does for 16-bit RGB, RGBA and grey+alpha PNGs. One deliberate divergence: for 16-bit
//!    *greyscale* ('I;16') PIL clamps each sample to 255, turning nearly every such photo white;
//!    brivl keeps the high byte there too, so the picture survives. Float samples (TIFF) are
//!    clamped to [0, 1] and scaled to 0..=255.
//! 5. **Apply the EXIF orientation** (all eight values, JPEG/PNG/WebP from the EXIF block, TIFF
//!    from its Orientation tag), like PIL's `ImageOps.exif_transpose`, so what the user sees is
//!    what gets embedded. An unreadable EXIF block counts as "no orientation", not as an error.
//!
//! Colour profiles (ICC) are ignored, as PIL ignores them. No input makes this panic: errors are
//! [`PhotoError`] values; natively a panic inside a decoder is also caught and reported as
//! [`PhotoError::Corrupt`].
//!
//! Parity: the fixtures in `tests/fixtures/photos/` (made by `tests/reference/make_photo_fixtures.py`)
//! carry PIL's decode of each file; lossless formats match it byte for byte, JPEG and lossy WebP
//! within a small max-abs difference (decoders differ in IDCT and chroma upsampling).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
use thiserror::Error;

pub use image::metadata::Orientation;

/// A decoded, upright photo: `pixels` is row-major interleaved RGB, `3 * width * height` bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for Rgb8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgb8 {{ {}x{}, {} bytes }}", self.width, self.height, self.pixels.len())
    }
}

impl Rgb8 {
    /// The `[r, g, b]` at column `x`, row `y`. Panics when out of bounds.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) outside {}x{}", self.width, self.height);
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// One `u32` per pixel for the GPU preprocess kernel: RGBA8 packed little-endian, R in the low
    /// byte, alpha 255.
    pub fn pack_rgba_u32(&self) -> Vec<u32> {
        self.pixels.chunks_exact(3).map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255])).collect()
    }
}

/// The formats [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhotoFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
    Bmp,
    Tiff,
}

impl PhotoFormat {
    pub fn name(self) -> &'static str {
        match self {
            PhotoFormat::Jpeg => "JPEG",
            PhotoFormat::Png => "PNG",
            PhotoFormat::WebP => "WebP",
            PhotoFormat::Gif => "GIF",
            PhotoFormat::Bmp => "BMP",
            PhotoFormat::Tiff => "TIFF",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            PhotoFormat::Jpeg => ImageFormat::Jpeg,
            PhotoFormat::Png => ImageFormat::Png,
            PhotoFormat::WebP => ImageFormat::WebP,
            PhotoFormat::Gif => ImageFormat::Gif,
            PhotoFormat::Bmp => ImageFormat::Bmp,
            PhotoFormat::Tiff => ImageFormat::Tiff,
        }
    }
}

impl std::fmt::Display for PhotoFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Caps checked against the header before decoding. `Default` is 100 megapixels, 100 000 pixels
/// a side and 512 MiB for the largest buffer (the decoder's native-depth pixels or the RGB output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Stored `width * height`.
    pub max_pixels: u64,
    /// Bytes of the largest single buffer: the decoded image at its native sample depth (for a
    /// 16-bit RGBA PNG that is 8 bytes a pixel) and the RGB output; also passed to the decoders
    /// for their own allocations.
    pub max_alloc: u64,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        PhotoLimits { max_width: 100_000, max_height: 100_000, max_pixels: 100_000_000, max_alloc: 512 << 20 }
    }
}

/// Why a photo could not be decoded. Every message names the problem and, where known, the format.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PhotoError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not an image format brivl reads (JPEG, PNG, WebP, GIF, BMP, TIFF); the file starts with {magic}")]
    UnknownFormat { magic: String },
    /// A format brivl recognises but does not decode (HEIC, AVIF, ...), or a feature of a
    /// supported format the decoder lacks (e.g. arithmetic-coded JPEG).
    #[error("unsupported {format} image: {detail}")]
    Unsupported { format: String, detail: String },
    /// The declared size is past the limits; `width`/`height` are as stored in the header.
    #[error("{}", too_large_message(*width, *height, detail))]
    TooLarge { width: u32, height: u32, detail: String },
    /// Corrupt or truncated data (or a header that makes no sense, like a zero width).
    #[error("corrupt or truncated {format} data: {detail}")]
    Corrupt { format: PhotoFormat, detail: String },
}

fn too_large_message(width: u32, height: u32, detail: &str) -> String {
    let mp = width as f64 * height as f64 / 1e6;
    format!("image too large: {width}x{height} ({mp:.1} megapixels); {detail}")
}

/// Header facts, read without decoding any pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoInfo {
    pub format: PhotoFormat,
    /// Size as stored (before orientation).
    pub width: u32,
    pub height: u32,
    /// The EXIF orientation that [`decode`] will apply.
    pub orientation: Orientation,
}

impl PhotoInfo {
    /// Size after orientation, i.e. the size of what [`decode`] returns.
    pub fn upright_size(&self) -> (u32, u32) {
        if swaps_axes(self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// Decodes a photo with the default [`PhotoLimits`].
pub fn decode(bytes: &[u8]) -> Result<Rgb8, PhotoError> {
    decode_with_limits(bytes, &PhotoLimits::default())
}

/// Decodes a photo: sniff, check the header against `limits`, decode, convert to RGB as PIL
/// does, apply the EXIF orientation.
pub fn decode_with_limits(bytes: &[u8], limits: &PhotoLimits) -> Result<Rgb8, PhotoError> {
    let format = sniff(bytes)?;
    guard(format, || decode_inner(bytes, format, limits))
}

/// Reads only the header: format, stored size and orientation. Applies the same size checks as
/// [`decode_with_limits`], so `Ok` means the size is acceptable (the data may still be corrupt).
pub fn probe(bytes: &[u8], limits: &PhotoLimits) -> Result<PhotoInfo, PhotoError> {
    let format = sniff(bytes)?;
    guard(format, || open(bytes, format, limits).map(|(info, _)| info))
}

/// Which supported format the bytes are, from their signature.
pub fn sniff(bytes: &[u8]) -> Result<PhotoFormat, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    // ISO-BMFF containers ("....ftyp<brand>"): iPhone photos are HEIC; `image` knows none of them.
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = &bytes[8..12];
        let name = match brand {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => "HEIC/HEIF",
            _ => "ISO media (MP4/MOV/HEIF family)",
        };
        return Err(PhotoError::Unsupported {
            format: name.into(),
            detail: format!(
                "brand '{}' is not decoded; convert the photo to JPEG or PNG",
                String::from_utf8_lossy(brand)
            ),
        });
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => Ok(PhotoFormat::Jpeg),
        Ok(ImageFormat::Png) => Ok(PhotoFormat::Png),
        Ok(ImageFormat::WebP) => Ok(PhotoFormat::WebP),
        Ok(ImageFormat::Gif) => Ok(PhotoFormat::Gif),
        Ok(ImageFormat::Bmp) => Ok(PhotoFormat::Bmp),
        Ok(ImageFormat::Tiff) => Ok(PhotoFormat::Tiff),
        Ok(other) => Err(PhotoError::Unsupported {
            format: other.to_mime_type().trim_start_matches("image/").to_ascii_uppercase(),
            detail: "format is recognised but not decoded; supported: JPEG, PNG, WebP, GIF, BMP, TIFF".into(),
        }),
        Err(_) => Err(PhotoError::UnknownFormat { magic: magic(bytes) }),
    }
}

/// Whether a file that starts with `head` (its first [`SNIFF_BYTES`] bytes, or all of a shorter
/// file) is a still image, decodable or not (HEIC and AVIF are photos brivl cannot read). An
/// indexer counts the rest (videos, documents, empty files) as "not photos" without reading
/// them whole.
pub fn looks_like_photo(head: &[u8]) -> bool {
    match sniff(head) {
        Ok(_) => true,
        Err(PhotoError::Unsupported { format, .. }) => !format.starts_with("ISO media"),
        Err(_) => false,
    }
}

/// How many leading bytes [`looks_like_photo`] needs.
pub const SNIFF_BYTES: usize = 32;

/// The first bytes as hex (and as text when printable), for error messages.
fn magic(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = head.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    format!("{} (\"{}\"), {} bytes in all", hex.join(" "), text, bytes.len())
}

/// Runs `f`, turning a panic (native targets unwind; wasm aborts, so there is nothing to catch)
/// into [`PhotoError::Corrupt`] so that no input takes the process down.
fn guard<T>(format: PhotoFormat, f: impl FnOnce() -> Result<T, PhotoError>) -> Result<T, PhotoError> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "decoder panicked".into());
            Err(PhotoError::Corrupt { format, detail: format!("decoder failed: {why}") })
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = format;
        f()
    }
}

fn image_limits(limits: &PhotoLimits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = None; // checked here first, so the error can name the size
    l.max_image_height = None;
    l.max_alloc = Some(limits.max_alloc);
    l
}

/// Header only: the decoder (which has parsed the header, no pixels) plus what it said.
fn open<'a>(
    bytes: &'a [u8],
    format: PhotoFormat,
    limits: &PhotoLimits,
) -> Result<(PhotoInfo, impl ImageDecoder + 'a), PhotoError> {
    if let Some((width, height)) = declared_size(bytes, format) {
        check_size(format, width, height, 0, limits)?;
    }
    if format == PhotoFormat::Tiff {
        tiff_tags_fit(bytes)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    reader.limits(image_limits(limits));
    let mut decoder = reader.into_decoder().map_err(|e| map_error(format, None, e))?;
    let (width, height) = decoder.dimensions();
    check_size(format, width, height, decoder.total_bytes(), limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok((PhotoInfo { format, width, height, orientation }, decoder))
}

/// Refuses a TIFF whose first directory has a tag claiming more bytes of values than the whole
/// file: the `tiff` decoder sizes a buffer from that count before reading (a 2 KB file asked
/// for 180 MB), and `image` gives no way to pass it limits. Anything else is left to it.
fn tiff_tags_fit(bytes: &[u8]) -> Result<(), PhotoError> {
    let big_endian = bytes.starts_with(b"MM");
    let at = |i: u64, n: usize| usize::try_from(i).ok().and_then(|i| bytes.get(i..i.checked_add(n)?));
    let uint = |i: u64, n: usize| {
        at(i, n).map(|b| {
            let mut v = 0u64;
            for k in 0..n {
                let byte = if big_endian { b[k] } else { b[n - 1 - k] };
                v = (v << 8) | byte as u64;
            }
            v
        })
    };
    let (bigtiff, first) = match uint(2, 2) {
        Some(42) => (false, uint(4, 4)),
        Some(43) => (true, uint(8, 8)),
        _ => return Ok(()),
    };
    let Some(ifd) = first else { return Ok(()) };
    let (count_size, entry_size) = if bigtiff { (8, 20) } else { (2, 12) };
    let Some(entries) = uint(ifd, count_size) else { return Ok(()) };
    for e in 0..entries {
        let Some(entry) = e.checked_mul(entry_size).and_then(|o| o.checked_add(ifd + count_size as u64)) else {
            break;
        };
        let (Some(tag), Some(kind)) = (uint(entry, 2), uint(entry + 2, 2)) else { break };
        let Some(count) = (if bigtiff { uint(entry + 4, 8) } else { uint(entry + 4, 4) }) else { break };
        let size: u64 = match kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16..=18 => 8,
            _ => continue,
        };
        if count.saturating_mul(size) > bytes.len() as u64 {
            return Err(PhotoError::Corrupt {
                format: PhotoFormat::Tiff,
                detail: format!("tag {tag} claims {count} values, more than the {}-byte file holds", bytes.len()),
            });
        }
    }
    Ok(())
}

/// The size a header declares, read directly from fixed offsets for the formats where that is
/// trivial (PNG IHDR, GIF logical screen, BMP info header), so the limits are checked before any
/// decoder sizes a buffer: some decoders refuse a huge header on 32-bit targets (wasm) with an
/// error that names no size. `None` when not known this way; the decoder's header then decides.
fn declared_size(bytes: &[u8], format: PhotoFormat) -> Option<(u32, u32)> {
    let at = |i: usize, n: usize| bytes.get(i..i + n);
    let le16 = |i| at(i, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
    let le32 = |i| at(i, 4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match format {
        PhotoFormat::Png if at(12, 4)? == b"IHDR" => {
            let be = |i| at(i, 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            Some((be(16)?, be(20)?))
        }
        PhotoFormat::Gif => Some((le16(6)?, le16(8)?)),
        PhotoFormat::Bmp => match le32(14)? {
            12 => Some((le16(18)?, le16(20)?)), // OS/2 core header
            n if n >= 40 => Some((le32(18)?.unsigned_abs(), le32(22)?.unsigned_abs())), // height < 0: top-down
            _ => None,
        },
        _ => None,
    }
}

fn check_size(
    format: PhotoFormat,
    width: u32,
    height: u32,
    native_bytes: u64,
    limits: &PhotoLimits,
) -> Result<(), PhotoError> {
    if width == 0 || height == 0 {
        return Err(PhotoError::Corrupt { format, detail: format!("header declares an empty {width}x{height} image") });
    }
    let too_large = |detail: String| Err(PhotoError::TooLarge { width, height, detail });
    if width > limits.max_width || height > limits.max_height {
        return too_large(format!("the limit is {}x{} pixels", limits.max_width, limits.max_height));
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return too_large(format!("the limit is {:.1} megapixels", limits.max_pixels as f64 / 1e6));
    }
    let biggest = native_bytes.max(pixels * 3);
    if biggest > limits.max_alloc {
        return too_large(format!(
            "decoding needs a {} MiB buffer, the limit is {} MiB",
            biggest.div_ceil(1 << 20),
            limits.max_alloc >> 20
        ));
    }
    Ok(())
}

fn decode_inner(bytes: &[u8], format: PhotoFormat, limits: &PhotoLimits) -> Result<Rgb8, PhotoError> {
    let (info, decoder) = open(bytes, format, limits)?;
    check_complete(bytes, format)?;
    let size = Some((info.width, info.height));
    let image = DynamicImage::from_decoder(decoder).map_err(|e| map_error(format, size, e))?;
    let rgb = to_rgb8_like_pil(image);
    if rgb.width() != info.width || rgb.height() != info.height {
        return Err(PhotoError::Corrupt {
            format,
            detail: format!("decoded {}x{}, header said {}x{}", rgb.width(), rgb.height(), info.width, info.height),
        });
    }
    let mut upright = DynamicImage::ImageRgb8(rgb);
    upright.apply_orientation(info.orientation);
    let upright = upright.into_rgb8(); // already RGB8: no conversion, no copy
    Ok(Rgb8 { width: upright.width(), height: upright.height(), pixels: upright.into_raw() })
}

/// Refuses truncated files that the decoders would otherwise accept, as PIL does: `zune-jpeg`
/// fills a JPEG cut anywhere in its scan data with grey, `image-webp` may decode a lossy WebP that
/// misses its last bytes. (A PNG missing the tail of its IEND chunk, or a GIF cut after its first
/// frame, decode in PIL too, and here; a PNG missing the whole IEND chunk decodes in PIL only.)
fn check_complete(bytes: &[u8], format: PhotoFormat) -> Result<(), PhotoError> {
    let truncated =
        |detail: String| Err(PhotoError::Corrupt { format, detail: format!("file is truncated: {detail}") });
    match format {
        PhotoFormat::Jpeg => match jpeg_scan_start(bytes) {
            Some(scan) if !bytes[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9]) => {
                truncated(format!("no end-of-image marker after the image data ({} bytes)", bytes.len()))
            }
            _ => Ok(()),
        },
        PhotoFormat::WebP if bytes.len() >= 12 && &bytes[..4] == b"RIFF" => {
            let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as u64 + 8;
            if (bytes.len() as u64) < declared {
                truncated(format!("the RIFF header declares {declared} bytes, the file has {}", bytes.len()))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Offset of the first start-of-scan marker, walking the JPEG segments from SOI; `None` when the
/// structure cannot be followed (the decoder then has the last word).
fn jpeg_scan_start(bytes: &[u8]) -> Option<usize> {
    let mut i = 2; // after SOI
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        match *bytes.get(i + 1)? {
            0xFF => i += 1,               // fill byte
            0xDA => return Some(i),       // start of scan
            0x01 | 0xD0..=0xD7 => i += 2, // markers without a length
            _ => i += 2 + u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]) as usize,
        }
    }
}

/// PIL's `convert('RGB')`, sample by sample (see the module doc for the 16-bit choice).
fn to_rgb8_like_pil(image: DynamicImage) -> image::RgbImage {
    use image::ImageBuffer;
    let (w, h) = (image.width(), image.height());
    fn build(w: u32, h: u32, pixels: Vec<u8>) -> image::RgbImage {
        ImageBuffer::from_raw(w, h, pixels).expect("3 bytes a pixel by construction")
    }
    let hi = |v: u16| (v >> 8) as u8;
    let grey = |v: u8| [v, v, v];
    match image {
        DynamicImage::ImageRgb8(img) => img,
        DynamicImage::ImageRgba8(img) => {
            build(w, h, img.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect())
        }
        DynamicImage::ImageLuma8(img) => build(w, h, img.as_raw().iter().flat_map(|&v| grey(v)).collect()),
        DynamicImage::ImageLumaA8(img) => build(w, h, img.as_raw().chunks_exact(2).flat_map(|p| grey(p[0])).collect()),
        DynamicImage::ImageRgb16(img) => build(w, h, img.as_raw().iter().map(|&v| hi(v)).collect()),
        DynamicImage::ImageRgba16(img) => {
            build(w, h, img.as_raw().chunks_exact(4).flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2])]).collect())
        }
        DynamicImage::ImageLuma16(img) => build(w, h, img.as_raw().iter().flat_map(|&v| grey(hi(v))).collect()),
        DynamicImage::ImageLumaA16(img) => {
            build(w, h, img.as_raw().chunks_exact(2).flat_map(|p| grey(hi(p[0]))).collect())
        }
        // Float (TIFF) and anything newer: `image`'s own conversion (clamp to [0, 1], scale, round;
        // alpha dropped without compositing).
        other => other.to_rgb8(),
    }
}

/// Maps the decoder's error onto [`PhotoError`]; `size` is the stored size once the header is read.
fn map_error(format: PhotoFormat, size: Option<(u32, u32)>, e: ImageError) -> PhotoError {
    match e {
        ImageError::Limits(l) => match size {
            Some((width, height)) => {
                PhotoError::TooLarge { width, height, detail: format!("the decoder hit a limit: {l}") }
            }
            None => PhotoError::Corrupt { format, detail: format!("header needs more memory than allowed: {l}") },
        },
        ImageError::Unsupported(u) => PhotoError::Unsupported { format: format.name().into(), detail: u.to_string() },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PhotoError::Corrupt { format, detail: format!("file ends early (truncated): {io}") }
        }
        ImageError::IoError(io) => PhotoError::Corrupt { format, detail: io.to_string() },
        ImageError::Decoding(d) => PhotoError::Corrupt { format, detail: d.to_string() },
        ImageError::Parameter(p) => PhotoError::Corrupt { format, detail: p.to_string() },
        ImageError::Encoding(x) => PhotoError::Corrupt { format, detail: x.to_string() },
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures and PIL goldens come from `tests/reference/make_photo_fixtures.py`; they are
    //! compiled in (`include_bytes!`) so the same tests run natively and in the browser.
    use super::*;

    macro_rules! photo_dir {
        () => {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/photos/")
        };
    }
    /// `(name, file, PIL's RGB bytes)` for every row of manifest.tsv.
    macro_rules! fixtures {
        ($($name:literal),* $(,)?) => {
            &[$(($name, include_bytes!(concat!(photo_dir!(), $name)) as &[u8],
                 include_bytes!(concat!(photo_dir!(), "pil/", $name, ".rgb")) as &[u8])),*]
        };
    }
    const FIXTURES: &[(&str, &[u8], &[u8])] = fixtures!(
        "rgb.png",
        "rgba.png",
        "grey.png",
        "grey_alpha.png",
        "palette.png",
        "bilevel.png",
        "rgb16.png",
        "rgba16.png",
        "la16.png",
        "grey16.png",
        "rgb.bmp",
        "palette.bmp",
        "rgb.tiff",
        "rgb_lzw.tiff",
        "grey_deflate.tiff",
        "lossless.webp",
        "lossless_alpha.webp",
        "lossy.webp",
        "anim.gif",
        "rgb420.jpg",
        "rgb444.jpg",
        "progressive.jpg",
        "grey.jpg",
        "cmyk.jpg",
        "orient_1.jpg",
        "orient_2.jpg",
        "orient_3.jpg",
        "orient_4.jpg",
        "orient_5.jpg",
        "orient_6.jpg",
        "orient_7.jpg",
        "orient_8.jpg",
        "orient_6.png",
        "orient_3.webp",
        "orient_8.tiff",
    );
    const MANIFEST: &str = include_str!(concat!(photo_dir!(), "manifest.tsv"));
    const HUGE: &[(&str, &[u8])] = &[
        ("huge.png", include_bytes!(concat!(photo_dir!(), "huge.png"))),
        ("huge.gif", include_bytes!(concat!(photo_dir!(), "huge.gif"))),
        ("huge.jpg", include_bytes!(concat!(photo_dir!(), "huge.jpg"))),
        ("huge.bmp", include_bytes!(concat!(photo_dir!(), "huge.bmp"))),
        ("huge.tiff", include_bytes!(concat!(photo_dir!(), "huge.tiff"))),
        ("huge_vp8x.webp", include_bytes!(concat!(photo_dir!(), "huge_vp8x.webp"))),
        ("huge_vp8l.webp", include_bytes!(concat!(photo_dir!(), "huge_vp8l.webp"))),
    ];
    const HUGE_TSV: &str = include_str!(concat!(photo_dir!(), "huge.tsv"));

    fn file(name: &str) -> &'static [u8] {
        FIXTURES.iter().find(|f| f.0 == name).unwrap_or_else(|| panic!("no fixture {name}")).1
    }

    fn ok(name: &str) -> Rgb8 {
        decode(file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn max_abs(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
    }

    fn log(msg: &str) {
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("{msg}");
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!("{}", msg);
    }

    /// Deterministic bytes (xorshift), same on every target.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_decodes_like_pil() {
        let rows: Vec<Vec<&str>> = MANIFEST
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split('\t').collect())
            .collect();
        assert_eq!(rows.len(), FIXTURES.len(), "manifest.tsv and FIXTURES disagree");
        let mut report = Vec::new();
        for row in rows {
            let (name, w, h, compare, tol) = (
                row[0],
                row[2].parse::<u32>().unwrap(),
                row[3].parse::<u32>().unwrap(),
                row[4],
                row[5].parse::<u8>().unwrap(),
            );
            let golden = FIXTURES.iter().find(|f| f.0 == name).unwrap_or_else(|| panic!("{name} not in FIXTURES")).2;
            let got = ok(name);
            assert_eq!((got.width, got.height), (w, h), "{name}: size");
            assert_eq!(got.pixels.len(), golden.len(), "{name}: byte count");
            let d = max_abs(&got.pixels, golden);
            match compare {
                "exact" => assert_eq!(d, 0, "{name}: differs from PIL (max abs {d}) but must match exactly"),
                "maxabs" => {
                    assert!(d <= tol, "{name}: max abs difference from PIL {d} > {tol}");
                    let mean = got.pixels.iter().zip(golden).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
                        / golden.len() as f64;
                    report.push(format!("{name} max {d} mean {mean:.2}"));
                }
                other => panic!("{name}: unknown compare mode {other}"),
            }
        }
        log(&format!("photo: max-abs difference from PIL for lossy files: {}", report.join(", ")));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_exif_orientation_all_eight() {
        let upright = ok("orient_1.jpg");
        assert_eq!((upright.width, upright.height), (32, 24));
        // The red block sits top-left in the upright picture; blue-ish elsewhere in that corner's mirror.
        let [r, g, b] = upright.pixel(5, 4);
        assert!(r > 180 && g < 90 && b < 90, "orient_1 top-left should be red, got {r} {g} {b}");
        for o in 2..=8u8 {
            let name = format!("orient_{o}.jpg");
            let bytes = file(&name);
            let info = probe(bytes, &PhotoLimits::default()).unwrap();
            assert_eq!(info.orientation, Orientation::from_exif(o).unwrap(), "{name}: orientation tag");
            assert_eq!(info.upright_size(), (32, 24), "{name}: upright size");
            let got = decode(bytes).unwrap();
            assert_eq!((got.width, got.height), (32, 24), "{name}: size after orientation");
            let d = max_abs(&got.pixels, &upright.pixels);
            assert!(d <= 6, "{name}: after orientation differs from orient_1.jpg by {d}");
            // Ignoring the tag must give a visibly different picture (the test would be blind otherwise).
            let stored = DynamicImage::from_decoder(
                ImageReader::new(Cursor::new(bytes)).with_guessed_format().unwrap().into_decoder().unwrap(),
            )
            .unwrap()
            .into_rgb8();
            if (stored.width(), stored.height()) == (32, 24) {
                assert!(max_abs(stored.as_raw(), &upright.pixels) > 100, "{name}: stored image looks upright already");
            }
        }
        // The same through PNG (eXIf), WebP (EXIF chunk) and TIFF (Orientation tag): lossless, exact.
        let reference = ok("rgb.png");
        for name in ["orient_6.png", "orient_3.webp", "orient_8.tiff"] {
            assert_eq!(ok(name), reference, "{name}: not upright after orientation");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_alpha_dropped_grey_replicated() {
        let rgb = ok("rgb.png");
        // rgba.png is rgb.png plus alpha 0 in its first 4 columns: the colour must survive as is.
        assert_eq!(ok("rgba.png"), rgb, "alpha must be dropped, not composited");
        assert_eq!(ok("lossless_alpha.webp"), rgb, "WebP alpha must be dropped, not composited");
        for name in
            ["grey.png", "grey_alpha.png", "grey16.png", "la16.png", "bilevel.png", "grey.jpg", "grey_deflate.tiff"]
        {
            let img = ok(name);
            assert!(img.pixels.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]), "{name}: grey not replicated");
        }
        let bilevel = ok("bilevel.png");
        assert!(bilevel.pixels.iter().all(|&v| v == 0 || v == 255), "1-bit grey expands to 0/255");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_sixteen_bit_keeps_high_byte() {
        use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
        let v = [0x0000u16, 0x00ff, 0x0100, 0x12fe, 0x7fff, 0x8000, 0xff00, 0xffff];
        let want: Vec<u8> = v.iter().map(|x| (x >> 8) as u8).collect();
        let grey = to_rgb8_like_pil(DynamicImage::ImageLuma16(
            ImageBuffer::<Luma<u16>, _>::from_raw(8, 1, v.to_vec()).unwrap(),
        ));
        assert_eq!(grey.as_raw(), &want.iter().flat_map(|&x| [x, x, x]).collect::<Vec<_>>());
        let la: Vec<u16> = v.iter().flat_map(|&x| [x, 0x1234]).collect();
        let la =
            to_rgb8_like_pil(DynamicImage::ImageLumaA16(ImageBuffer::<LumaA<u16>, _>::from_raw(8, 1, la).unwrap()));
        assert_eq!(la.as_raw(), grey.as_raw());
        let rgb: Vec<u16> = v.iter().flat_map(|&x| [x, !x, x / 2]).collect();
        let rgb_want: Vec<u8> = rgb.iter().map(|x| (x >> 8) as u8).collect();
        let got = to_rgb8_like_pil(DynamicImage::ImageRgb16(
            ImageBuffer::<Rgb<u16>, _>::from_raw(8, 1, rgb.clone()).unwrap(),
        ));
        assert_eq!(got.as_raw(), &rgb_want);
        let rgba: Vec<u16> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 7]).collect();
        let got =
            to_rgb8_like_pil(DynamicImage::ImageRgba16(ImageBuffer::<Rgba<u16>, _>::from_raw(8, 1, rgba).unwrap()));
        assert_eq!(got.as_raw(), &rgb_want);
        let f = to_rgb8_like_pil(DynamicImage::ImageRgb32F(
            ImageBuffer::from_raw(2, 1, vec![-1.0, 0.0, 0.5, 1.0, 2.0, 0.25]).unwrap(),
        ));
        assert_eq!(f.as_raw(), &[0, 0, 128, 255, 255, 64]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_gif_first_frame_only() {
        let gif = ok("anim.gif");
        // Frame 1 is frame 0 turned 180 degrees; frame 0 has the red block top-left.
        let [r, g, b] = gif.pixel(5, 4);
        assert!(r > 180 && g < 90 && b < 90, "anim.gif should show frame 0, got {r} {g} {b} top-left");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_pack_rgba_u32_layout() {
        let img = ok("rgb.png");
        let packed = img.pack_rgba_u32();
        assert_eq!(packed.len(), 32 * 24);
        let [r, g, b] = img.pixel(1, 0);
        assert_eq!(packed[1], r as u32 | (g as u32) << 8 | (b as u32) << 16 | 0xff00_0000);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_refuses_huge_headers_before_decoding() {
        for line in HUGE_TSV.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (name, w, h) = (cols[0], cols[1].parse::<u32>().unwrap(), cols[2].parse::<u32>().unwrap());
            let bytes = HUGE.iter().find(|f| f.0 == name).unwrap_or_else(|| panic!("{name} not in HUGE")).1;
            match decode(bytes) {
                Err(e @ PhotoError::TooLarge { width, height, .. }) => {
                    assert_eq!((width, height), (w, h), "{name}");
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{w}x{h}")), "{name}: message should name the size: {msg}");
                }
                other => panic!("{name}: expected TooLarge, got {other:?}"),
            }
            assert!(matches!(probe(bytes, &PhotoLimits::default()), Err(PhotoError::TooLarge { .. })), "{name}: probe");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_limits_are_configurable() {
        let bytes = file("rgb.png");
        let base = PhotoLimits::default();
        for limits in [
            PhotoLimits { max_pixels: 32 * 24 - 1, ..base },
            PhotoLimits { max_width: 31, ..base },
            PhotoLimits { max_height: 23, ..base },
            PhotoLimits { max_alloc: 1000, ..base },
        ] {
            match decode_with_limits(bytes, &limits) {
                Err(PhotoError::TooLarge { width: 32, height: 24, .. }) => {}
                other => panic!("{limits:?}: expected TooLarge 32x24, got {other:?}"),
            }
        }
        let exact = PhotoLimits { max_width: 32, max_height: 24, max_pixels: 32 * 24, max_alloc: 32 * 24 * 3 };
        assert_eq!(decode_with_limits(bytes, &exact).unwrap(), ok("rgb.png"));
        // 16-bit RGBA needs 8 bytes a pixel at native depth.
        let rgba16 = file("rgba16.png");
        assert!(matches!(
            decode_with_limits(rgba16, &PhotoLimits { max_alloc: 32 * 24 * 8 - 1, ..base }),
            Err(PhotoError::TooLarge { .. })
        ));
        assert!(decode_with_limits(rgba16, &PhotoLimits { max_alloc: 32 * 24 * 8, ..base }).is_ok());
        let info = probe(file("orient_6.jpg"), &base).unwrap();
        assert_eq!(
            (info.format, info.width, info.height, info.orientation),
            (PhotoFormat::Jpeg, 24, 32, Orientation::Rotate90)
        );
        assert_eq!(info.upright_size(), (32, 24));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_bad_input_is_an_error() {
        assert_eq!(decode(&[]), Err(PhotoError::Empty));
        for seed in 0..32 {
            let junk = noise(1 + seed as usize * 37, seed);
            match decode(&junk) {
                Err(PhotoError::UnknownFormat { magic }) => assert!(magic.contains("bytes in all"), "{magic}"),
                Err(PhotoError::Unsupported { .. }) | Err(PhotoError::Corrupt { .. }) => {} // junk can start with a magic
                other => panic!("random bytes (seed {seed}): {other:?}"),
            }
        }
        let msg = decode(b"hello, world").unwrap_err().to_string();
        assert!(msg.contains("68 65 6c 6c") && msg.contains("\"hello, w\""), "{msg}");
        // Recognised but not decoded.
        let mut heic = vec![0, 0, 0, 24];
        heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
        assert!(matches!(decode(&heic), Err(PhotoError::Unsupported { ref format, .. }) if format == "HEIC/HEIF"));
        let mut avif = vec![0, 0, 0, 24];
        avif.extend_from_slice(b"ftypavif\0\0\0\0mif1avif");
        assert!(matches!(decode(&avif), Err(PhotoError::Unsupported { ref format, .. }) if format == "AVIF"));
        assert!(matches!(decode(b"qoif\0\0\0\x20\0\0\0\x20\x03\x00"), Err(PhotoError::Unsupported { .. })));
        // A valid signature followed by junk.
        for sig in [&b"\x89PNG\r\n\x1a\n"[..], b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\0", b"RIFF\0\0\0\0WEBPVP8 "]
        {
            let mut bytes = sig.to_vec();
            bytes.extend(noise(200, sig.len() as u64));
            let got = decode(&bytes);
            // Junk in a header may also declare an absurd size.
            assert!(
                matches!(
                    got,
                    Err(PhotoError::Corrupt { .. })
                        | Err(PhotoError::Unsupported { .. })
                        | Err(PhotoError::TooLarge { .. })
                ),
                "{}+junk: {got:?}",
                String::from_utf8_lossy(sig)
            );
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_truncated_is_an_error() {
        // As PIL: JPEG and WebP missing even their last byte are refused; a PNG missing only the
        // end of its IEND chunk, or a GIF cut after its first frame, still decodes (checked below).
        let mut failures = Vec::new();
        for name in [
            "rgb420.jpg",
            "progressive.jpg",
            "grey.jpg",
            "rgb.png",
            "palette.png",
            "anim.gif",
            "lossless.webp",
            "lossy.webp",
            "rgb.bmp",
            "rgb.tiff",
            "rgb_lzw.tiff",
        ] {
            let bytes = file(name);
            let mut cuts = vec![bytes.len() / 4, bytes.len() / 2];
            if !name.ends_with(".gif") {
                cuts.push(bytes.len() * 3 / 4);
            }
            if !name.ends_with(".png") && !name.ends_with(".gif") {
                cuts.extend([bytes.len() - 20, bytes.len() - 1]);
            }
            for keep in cuts {
                match decode(&bytes[..keep]) {
                    Err(PhotoError::Corrupt { detail, .. }) if !detail.starts_with("decoder failed") => {}
                    other => failures.push(format!(
                        "{name} cut to {keep} of {} bytes: expected Corrupt, got {other:?}",
                        bytes.len()
                    )),
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // (PIL also decodes a PNG whose whole IEND chunk is missing; the png crate wants to see the
        // chunk after the last IDAT, so that one is refused here: a deliberate, harmless gap.)
        assert!(matches!(decode(&file("rgb.png")[..838 - 12]), Err(PhotoError::Corrupt { .. })));
        for (name, cut) in [("rgb.png", 1), ("anim.gif", 1), ("anim.gif", 240)] {
            let bytes = file(name);
            assert_eq!(decode(&bytes[..bytes.len() - cut]).unwrap(), ok(name), "{name} without its last {cut} bytes");
        }
        // A JPEG with data after its end-of-image marker (phones append a second picture) is fine.
        let mut padded = file("rgb420.jpg").to_vec();
        padded.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE1, 0, 0]);
        assert_eq!(decode(&padded).unwrap(), ok("rgb420.jpg"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn photo_mutated_files_never_panic() {
        // Flip bytes and cut files at random places; any Ok or Err is fine, a panic is not
        // (natively `guard` turns one into Corrupt "decoder failed: ...", which fails here).
        let mut n = 0;
        for (i, (name, bytes, _)) in FIXTURES.iter().enumerate() {
            for round in 0..24u64 {
                let r = noise(16, i as u64 * 1000 + round);
                let mut m = bytes.to_vec();
                for k in 0..(1 + r[0] as usize % 4) {
                    let at = (r[1 + 2 * k] as usize * 256 + r[2 + 2 * k] as usize) % m.len();
                    m[at] ^= r[10 + k].max(1);
                }
                if round % 3 == 0 {
                    m.truncate(1 + (r[15] as usize * m.len()) / 256);
                }
                match decode(&m) {
                    Err(PhotoError::Corrupt { detail, .. }) if detail.starts_with("decoder failed") => {
                        panic!("{name} mutation {round}: decoder panicked: {detail}")
                    }
                    Ok(img) => assert_eq!(img.pixels.len(), 3 * img.width as usize * img.height as usize),
                    Err(_) => {}
                }
                n += 1;
            }
        }
        log(&format!("photo: {n} mutated files decoded or refused without panicking"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_tiff_tag_claiming_more_than_the_file_is_refused_before_decoding() {
        // orient_8.tiff (little-endian) with its first tag's value count made 0x00ff_ffff:
        // the tiff decoder would size a buffer of hundreds of MB from it.
        let mut b = include_bytes!(concat!(photo_dir!(), "orient_8.tiff")).to_vec();
        assert_eq!(&b[..4], b"II*\0");
        let ifd = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        b[ifd + 2 + 4..ifd + 2 + 8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        match decode(&b) {
            Err(PhotoError::Corrupt { format: PhotoFormat::Tiff, detail }) => {
                assert!(detail.contains("claims 16777215 values, more than the"), "{detail}")
            }
            other => panic!("expected a corrupt TIFF, got {other:?}"),
        }
    }
}
