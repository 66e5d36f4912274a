//! A layered PSD writer: 8-bit RGB, one named RGBA layer per [`Layers`] entry, plus the merged
//! image.
//!
//! No PSD writer crate is trustworthy, so this is our own, following Adobe's "Photoshop File
//! Formats Specification" with only what a minimal layered file needs. All numbers are big-endian.
//!
//! ```text
//! header              "8BPS", version 1, 6 reserved, channels, height, width, depth 8, mode 3 (RGB)
//! colour mode data    length 0
//! image resources     length 0
//! layer & mask info   length, then
//!   layer info        length (even), layer count, layer records, channel image data
//!   global mask info  length 0
//! merged image        compression 1 (PackBits), row byte counts of every channel, then rows
//! ```
//!
//! Each layer spans the whole canvas and has four channels: transparency (id -1) first, as
//! Photoshop writes it, then red, green, blue (0, 1, 2), all PackBits-compressed row by row.
//! Layer names are a Pascal string (ASCII, for old readers) plus a `luni` block with the full
//! Unicode name.
//!
//! Two traps, both handled here:
//! - The visibility flag: the specification says flag bit 1 means "visible", but Photoshop sets
//!   it for *hidden* layers, and readers (psd-tools, GIMP, newer `psd`) follow Photoshop. Visible
//!   layers are therefore written with bit 1 clear.
//! - The merged image is not optional in practice: many viewers and thumbnailers show only it.
//!   It is the [`composite`] of the layers, with an alpha channel when the composite is not
//!   opaque (then the layer count is written negative, which tells readers that the merged
//!   image's first extra channel is its transparency, and the colours are stored composited
//!   over white, as Photoshop does and psd-tools expects).

use std::io::Write;

use image::RgbaImage;

use crate::pixels::{Layers, composite, unit_to_u8};
use crate::{ImagingError, Result};

/// Largest width or height a PSD (not PSB) can have.
const MAX_SIDE_PX: u32 = 30_000;
/// Flag bit 1: set means hidden in Photoshop's practice (see the module docs).
const FLAG_HIDDEN: u8 = 1 << 1;
/// Flag bit 3: "bit 4 carries information" (bit 4 clear: the pixel data matters).
const FLAG_PHOTOSHOP_5: u8 = 1 << 3;
/// Channel data compression codes.
const COMPRESSION_PACKBITS: u16 = 1;
/// PackBits encodes at most 128 bytes per run or literal.
const PACKBITS_MAX_RUN: usize = 128;
/// The Pascal name holds at most 255 bytes.
const MAX_PASCAL_NAME_BYTES: usize = 255;

/// Writes `layers` as a layered 8-bit RGB PSD, bottom layer first, all visible, plus the merged
/// image.
pub fn write_psd(mut writer: impl Write, layers: &Layers) -> Result<()> {
    let (width_px, height_px) = (layers.width_px(), layers.height_px());
    if width_px == 0 || height_px == 0 {
        return Err(ImagingError::EmptyImage {
            width_px,
            height_px,
        });
    }
    for (what, value) in [("width", width_px), ("height", height_px)] {
        if value > MAX_SIDE_PX {
            return Err(ImagingError::PsdLimit {
                what,
                value: value as usize,
                limit: MAX_SIDE_PX as usize,
            });
        }
    }
    if layers.is_empty() {
        return Err(ImagingError::NoLayers);
    }
    let n_layers = i16::try_from(layers.len()).map_err(|_| ImagingError::PsdLimit {
        what: "layer count",
        value: layers.len(),
        limit: i16::MAX as usize,
    })?;

    let merged = composite(layers);
    let merged_is_opaque = merged.pixels().all(|pixel| pixel.0[3] == u8::MAX);
    let n_merged_channels: u16 = if merged_is_opaque { 3 } else { 4 };

    let mut out = Vec::new();
    out.extend_from_slice(b"8BPS");
    put_u16(&mut out, 1); // Version 1: PSD, not PSB.
    out.extend_from_slice(&[0; 6]);
    put_u16(&mut out, n_merged_channels);
    put_u32(&mut out, height_px);
    put_u32(&mut out, width_px);
    put_u16(&mut out, 8); // Bits per channel.
    put_u16(&mut out, 3); // Colour mode RGB.
    put_u32(&mut out, 0); // Colour mode data: none for RGB.
    put_u32(&mut out, 0); // Image resources: none needed.

    // A negative count says that the merged image's alpha is its transparency.
    let signed_count = if merged_is_opaque {
        n_layers
    } else {
        -n_layers
    };
    let layer_info = layer_info_bytes(layers, signed_count)?;
    let layer_and_mask_len = 4 + layer_info.len() + 4;
    put_u32(&mut out, length_u32(layer_and_mask_len)?);
    put_u32(&mut out, length_u32(layer_info.len())?);
    out.extend_from_slice(&layer_info);
    put_u32(&mut out, 0); // Global layer mask info: none.

    write_merged_image(&mut out, &merged, usize::from(n_merged_channels), width_px)?;
    writer.write_all(&out)?;
    writer.flush()?;
    Ok(())
}

/// Layer count, records and channel data, padded to an even length as the format requires.
fn layer_info_bytes(layers: &Layers, signed_count: i16) -> Result<Vec<u8>> {
    let (width_px, height_px) = (layers.width_px(), layers.height_px());
    let mut records = Vec::new();
    let mut channel_data = Vec::new();
    for layer in layers {
        let [red, green, blue, alpha] = planes(&layer.image);
        // Transparency first, the order Photoshop itself writes.
        let channels = [(-1_i16, alpha), (0, red), (1, green), (2, blue)];

        put_u32(&mut records, 0); // Top.
        put_u32(&mut records, 0); // Left.
        put_u32(&mut records, height_px); // Bottom.
        put_u32(&mut records, width_px); // Right.
        put_u16(&mut records, channels.len() as u16);
        for (channel_id, plane) in &channels {
            let start = channel_data.len();
            put_u16(&mut channel_data, COMPRESSION_PACKBITS);
            packbits_plane(&mut channel_data, plane, width_px)?;
            records.extend_from_slice(&channel_id.to_be_bytes());
            put_u32(&mut records, length_u32(channel_data.len() - start)?);
        }
        records.extend_from_slice(b"8BIMnorm");
        records.push(u8::MAX); // Opacity.
        records.push(0); // Clipping: base.
        records.push(FLAG_PHOTOSHOP_5 & !FLAG_HIDDEN);
        records.push(0); // Filler.

        let mut extra = Vec::new();
        put_u32(&mut extra, 0); // Layer mask data: none.
        put_u32(&mut extra, 0); // Blending ranges: none.
        put_pascal_name(&mut extra, &layer.name);
        put_unicode_name_block(&mut extra, &layer.name)?;
        put_u32(&mut records, length_u32(extra.len())?);
        records.extend_from_slice(&extra);
    }
    let mut info = Vec::with_capacity(2 + records.len() + channel_data.len() + 1);
    info.extend_from_slice(&signed_count.to_be_bytes());
    info.extend_from_slice(&records);
    info.extend_from_slice(&channel_data);
    if !info.len().is_multiple_of(2) {
        info.push(0);
    }
    Ok(info)
}

/// The merged image: PackBits, all row byte counts first, then the rows, channel by channel.
///
/// With transparency, Photoshop stores the merged colours composited over white (readers such
/// as psd-tools undo that by un-matting against the alpha plane), so that is what is written.
fn write_merged_image(
    out: &mut Vec<u8>,
    merged: &RgbaImage,
    n_channels: usize,
    width_px: u32,
) -> Result<()> {
    put_u16(out, COMPRESSION_PACKBITS);
    let mut row_lengths = Vec::new();
    let mut rows = Vec::new();
    let merged = if n_channels > 3 {
        matted_over_white(merged)
    } else {
        merged.clone()
    };
    for plane in planes(&merged).iter().take(n_channels) {
        for row in plane.chunks(width_px as usize) {
            let start = rows.len();
            packbits_row(&mut rows, row);
            row_lengths.push(row_length_u16(rows.len() - start)?);
        }
    }
    for row_length in row_lengths {
        put_u16(out, row_length);
    }
    out.extend_from_slice(&rows);
    Ok(())
}

/// Composites the colours over white, keeping the alpha channel as it is.
fn matted_over_white(image: &RgbaImage) -> RgbaImage {
    let mut matted = image.clone();
    for pixel in matted.pixels_mut() {
        let [r, g, b, a] = pixel.0;
        let alpha = f32::from(a) / 255.0;
        let over_white = |c: u8| unit_to_u8((f32::from(c) * alpha + 255.0 * (1.0 - alpha)) / 255.0);
        pixel.0 = [over_white(r), over_white(g), over_white(b), a];
    }
    matted
}

/// Splits interleaved RGBA into four planes.
fn planes(image: &RgbaImage) -> [Vec<u8>; 4] {
    let n_pixels = image.width() as usize * image.height() as usize;
    let mut planes: [Vec<u8>; 4] = std::array::from_fn(|_| Vec::with_capacity(n_pixels));
    for pixel in image.pixels() {
        for (plane, sample) in planes.iter_mut().zip(pixel.0) {
            plane.push(sample);
        }
    }
    planes
}

/// One channel of a layer: its row byte counts, then its PackBits rows.
fn packbits_plane(out: &mut Vec<u8>, plane: &[u8], width_px: u32) -> Result<()> {
    let mut rows = Vec::new();
    for row in plane.chunks(width_px as usize) {
        let start = rows.len();
        packbits_row(&mut rows, row);
        put_u16(out, row_length_u16(rows.len() - start)?);
    }
    out.extend_from_slice(&rows);
    Ok(())
}

/// PackBits (Apple TN1023): a header byte n in 0..=127 copies the next n+1 bytes literally;
/// n in -127..=-1 repeats the next byte 1-n times.
fn packbits_row(out: &mut Vec<u8>, row: &[u8]) {
    let mut rest = row;
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .take(PACKBITS_MAX_RUN)
            .take_while(|&&b| b == first)
            .count();
        if run >= 2 {
            // 1 - run, as a two's-complement byte.
            out.push((257 - run) as u8);
            out.push(first);
            rest = rest.get(run..).unwrap_or_default();
            continue;
        }
        // A literal ends where a run of three begins: shorter repeats cost no less as literals.
        let mut literal_len = 1;
        while literal_len < PACKBITS_MAX_RUN && literal_len < rest.len() {
            let ahead = rest.get(literal_len..literal_len + 3);
            if matches!(ahead, Some([a, b, c]) if a == b && b == c) {
                break;
            }
            literal_len += 1;
        }
        out.push((literal_len - 1) as u8);
        out.extend_from_slice(rest.get(..literal_len).unwrap_or_default());
        rest = rest.get(literal_len..).unwrap_or_default();
    }
}

/// Pascal string: a length byte, the name in ASCII (anything else becomes `_`; the `luni` block
/// keeps the real name), zero-padded so that the whole is a multiple of 4 bytes.
fn put_pascal_name(out: &mut Vec<u8>, name: &str) {
    let ascii: Vec<u8> = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b'_'
            }
        })
        .take(MAX_PASCAL_NAME_BYTES)
        .collect();
    let start = out.len();
    out.push(ascii.len() as u8);
    out.extend_from_slice(&ascii);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

/// Additional layer information block `luni`: the name as UTF-16 with a code unit count.
/// Its length is padded to a multiple of 4 so that readers that round lengths up to 2 or to 4
/// land on the same next block.
fn put_unicode_name_block(out: &mut Vec<u8>, name: &str) -> Result<()> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let mut data = Vec::with_capacity(4 + 2 * units.len() + 2);
    put_u32(&mut data, length_u32(units.len())?);
    for unit in &units {
        put_u16(&mut data, *unit);
    }
    while !data.len().is_multiple_of(4) {
        data.push(0);
    }
    out.extend_from_slice(b"8BIMluni");
    put_u32(out, length_u32(data.len())?);
    out.extend_from_slice(&data);
    Ok(())
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn length_u32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| ImagingError::PsdLimit {
        what: "section length in bytes",
        value: len,
        limit: u32::MAX as usize,
    })
}

fn row_length_u16(len: usize) -> Result<u16> {
    // Cannot happen within 30,000 pixels per row (at most 30,235 bytes packed), but a wrong
    // length would corrupt the file silently, so it is checked, not assumed.
    u16::try_from(len).map_err(|_| ImagingError::PsdLimit {
        what: "packed row length in bytes",
        value: len,
        limit: u16::MAX as usize,
    })
}

#[cfg(test)]
mod tests;
