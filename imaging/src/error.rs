//! The crate's one error type.
//!
//! Messages put paths last, so that a long path never hides what went wrong.

use std::path::PathBuf;

/// Everything that can go wrong while making, reading or writing images.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// Reading or writing bytes failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The `png` crate refused to encode.
    #[error("PNG encoding failed: {0}")]
    PngEncode(#[from] png::EncodingError),
    /// The `png` crate could not decode the bytes.
    #[error("PNG decoding failed: {0}")]
    PngDecode(#[from] png::DecodingError),
    /// The `image` crate failed to decode or encode.
    #[error("image codec error: {0}")]
    Codec(#[from] image::ImageError),
    /// The bytes are not a PNG, JPEG or WebP image.
    #[error("unsupported image format ({detected}); expected PNG, JPEG or WebP")]
    UnsupportedFormat {
        /// What the bytes looked like, in words.
        detected: String,
    },
    /// A float buffer's length or channel count does not match the image shape it claims.
    #[error(
        "float image buffer has {n_values} values, which does not match shape \
         {n_channels}x{height_px}x{width_px} (CHW, 3 channels expected)"
    )]
    ShapeMismatch {
        /// Values in the buffer.
        n_values: usize,
        /// Claimed channels.
        n_channels: usize,
        /// Claimed height.
        height_px: u32,
        /// Claimed width.
        width_px: u32,
    },
    /// An image with zero width or height, which no format here can hold.
    #[error("image is empty ({width_px}x{height_px})")]
    EmptyImage {
        /// Width in pixels.
        width_px: u32,
        /// Height in pixels.
        height_px: u32,
    },
    /// A layer whose size differs from the stack it is added to.
    #[error(
        "layer {name:?} is {width_px}x{height_px} but the stack is \
         {stack_width_px}x{stack_height_px}"
    )]
    LayerSizeMismatch {
        /// The layer's name.
        name: String,
        /// The layer's width.
        width_px: u32,
        /// The layer's height.
        height_px: u32,
        /// The stack's width.
        stack_width_px: u32,
        /// The stack's height.
        stack_height_px: u32,
    },
    /// `layer_split` was asked for a layer count outside 2..=8.
    #[error("layer count {n_layers} is out of range; LayerSplit makes 2 to 8 layers")]
    LayerCountOutOfRange {
        /// The count asked for.
        n_layers: usize,
    },
    /// LayerSplit's per-pixel or per-region tables disagree in size: a bug in LayerSplit,
    /// reported rather than turned into layers that silently differ from the picture.
    #[error("LayerSplit bug: the {what} has {len} entries where {expected} were expected")]
    SplitSizeMismatch {
        /// Which table, in words.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length it should have.
        expected: usize,
    },
    /// LayerSplit looked up an entry its table does not have: a bug in LayerSplit, reported
    /// rather than read as a default or written nowhere.
    #[error("LayerSplit bug: index {idx} is outside the {what} ({len} entries)")]
    SplitIndexOutOfRange {
        /// Which table, in words.
        what: &'static str,
        /// The index looked up.
        idx: usize,
        /// The table's length.
        len: usize,
    },
    /// The layer stack has no layers, so there is nothing to write.
    #[error("the layer stack is empty")]
    NoLayers,
    /// The picture or stack is too large for the PSD format.
    #[error("{what} is too large for PSD ({value}, at most {limit})")]
    PsdLimit {
        /// Which quantity overflowed, in words.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The format's limit.
        limit: usize,
    },
    /// A PNG text key that PNG cannot store.
    #[error("invalid PNG text key {key:?}: {reason}")]
    InvalidTextKey {
        /// The key.
        key: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A PNG text chunk whose text is not readable.
    #[error("unreadable PNG text chunk {key:?}: {reason}")]
    UnreadableText {
        /// The chunk's key.
        key: String,
        /// Why it could not be read.
        reason: String,
    },
    /// Export was given neither an image nor layers.
    #[error("nothing to export: give an image, layers or both")]
    NothingToExport,
    /// An export format name that is not png, psd, jpg/jpeg or webp.
    #[error("unknown export format {name:?}; expected png, psd, jpg or webp")]
    UnknownExportFormat {
        /// The name as given.
        name: String,
    },
    /// The output path prefix or extension cannot name a file.
    #[error("invalid output name ({reason}): {path}")]
    InvalidOutputName {
        /// Why.
        reason: &'static str,
        /// The prefix as given.
        path: PathBuf,
    },
    /// Every numbered name for this prefix is taken.
    #[error("no free file name after {n_tries} numbered tries: {path}")]
    NoFreeName {
        /// How many names were tried.
        n_tries: u32,
        /// The prefix as given.
        path: PathBuf,
    },
}
