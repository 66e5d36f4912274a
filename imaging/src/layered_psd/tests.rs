//! PSD writer tests: an independent minimal parser written from the specification, and the
//! `psd` crate as a second reader.

use image::{Rgb, RgbImage, Rgba, RgbaImage};

use super::*;
use crate::split::layer_split;

/// A big-endian reader that panics on short input (this is test code).
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        slice
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
}

#[derive(Debug)]
struct ParsedLayer {
    bounds: [i32; 4],
    pascal_name: String,
    unicode_name: Option<String>,
    blend: Vec<u8>,
    opacity: u8,
    flags: u8,
    /// (channel id, decoded plane)
    channels: Vec<(i16, Vec<u8>)>,
}

struct ParsedPsd {
    width_px: u32,
    height_px: u32,
    n_channels: u16,
    signed_layer_count: i16,
    layers: Vec<ParsedLayer>,
    merged_planes: Vec<Vec<u8>>,
}

fn unpack_bits(packed: &[u8], expected_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = Cursor {
        bytes: packed,
        pos: 0,
    };
    while cursor.pos < packed.len() {
        let header = cursor.u8() as i8;
        match header {
            0..=127 => out.extend_from_slice(cursor.take(header as usize + 1)),
            -127..=-1 => {
                let value = cursor.u8();
                out.extend(std::iter::repeat_n(value, (1 - i32::from(header)) as usize));
            }
            -128 => {}
        }
    }
    assert_eq!(out.len(), expected_len, "unpacked row length");
    out
}

/// Reads one channel's data (compression code first), raw or PackBits.
fn read_channel(bytes: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut cursor = Cursor { bytes, pos: 0 };
    match cursor.u16() {
        0 => cursor.take(width * height).to_vec(),
        1 => {
            let row_lengths: Vec<usize> = (0..height).map(|_| cursor.u16() as usize).collect();
            let mut plane = Vec::new();
            for row_length in row_lengths {
                plane.extend(unpack_bits(cursor.take(row_length), width));
            }
            assert_eq!(cursor.pos, bytes.len(), "channel data fully used");
            plane
        }
        other => panic!("unexpected compression {other}"),
    }
}

fn parse(bytes: &[u8]) -> ParsedPsd {
    let mut c = Cursor { bytes, pos: 0 };
    assert_eq!(c.take(4), b"8BPS");
    assert_eq!(c.u16(), 1, "version");
    assert_eq!(c.take(6), [0; 6]);
    let n_channels = c.u16();
    let height_px = c.u32();
    let width_px = c.u32();
    assert_eq!(c.u16(), 8, "depth");
    assert_eq!(c.u16(), 3, "RGB mode");
    let colour_mode_len = c.u32() as usize;
    c.take(colour_mode_len);
    let resources_len = c.u32() as usize;
    c.take(resources_len);

    let layer_and_mask_len = c.u32() as usize;
    let layer_and_mask_end = c.pos + layer_and_mask_len;
    let layer_info_len = c.u32() as usize;
    assert_eq!(layer_info_len % 2, 0, "layer info length is even");
    let layer_info_end = c.pos + layer_info_len;
    let signed_layer_count = c.i16();
    let mut layers = Vec::new();
    let mut channel_lengths = Vec::new();
    for _ in 0..signed_layer_count.unsigned_abs() {
        let bounds = [c.i32(), c.i32(), c.i32(), c.i32()];
        let n_layer_channels = c.u16();
        let channel_info: Vec<(i16, usize)> = (0..n_layer_channels)
            .map(|_| (c.i16(), c.u32() as usize))
            .collect();
        assert_eq!(c.take(4), b"8BIM");
        let blend = c.take(4).to_vec();
        let opacity = c.u8();
        assert_eq!(c.u8(), 0, "clipping");
        let flags = c.u8();
        assert_eq!(c.u8(), 0, "filler");
        let extra_len = c.u32() as usize;
        let extra_end = c.pos + extra_len;
        let mask_len = c.u32() as usize;
        c.take(mask_len);
        let blending_len = c.u32() as usize;
        c.take(blending_len);
        let name_start = c.pos;
        let name_len = c.u8() as usize;
        let pascal_name = String::from_utf8(c.take(name_len).to_vec()).unwrap();
        while !(c.pos - name_start).is_multiple_of(4) {
            assert_eq!(c.u8(), 0, "name padding");
        }
        let mut unicode_name = None;
        while c.pos < extra_end {
            assert_eq!(c.take(4), b"8BIM");
            let key = c.take(4).to_vec();
            let block_len = c.u32() as usize;
            let block = c.take(block_len);
            if key == b"luni" {
                let mut block_cursor = Cursor {
                    bytes: block,
                    pos: 0,
                };
                let n_units = block_cursor.u32() as usize;
                let units: Vec<u16> = (0..n_units).map(|_| block_cursor.u16()).collect();
                unicode_name = Some(String::from_utf16(&units).unwrap());
            }
        }
        assert_eq!(c.pos, extra_end, "extra data length");
        channel_lengths.push(channel_info.clone());
        layers.push(ParsedLayer {
            bounds,
            pascal_name,
            unicode_name,
            blend,
            opacity,
            flags,
            channels: Vec::new(),
        });
    }
    for (layer, channel_info) in layers.iter_mut().zip(channel_lengths) {
        let width = (layer.bounds[3] - layer.bounds[1]) as usize;
        let height = (layer.bounds[2] - layer.bounds[0]) as usize;
        for (channel_id, length) in channel_info {
            layer
                .channels
                .push((channel_id, read_channel(c.take(length), width, height)));
        }
    }
    assert!(
        layer_info_end - c.pos <= 1,
        "layer info ends after at most one pad byte"
    );
    c.pos = layer_info_end;
    let global_mask_len = c.u32() as usize;
    c.take(global_mask_len);
    assert_eq!(c.pos, layer_and_mask_end, "layer and mask section length");

    let (width, height) = (width_px as usize, height_px as usize);
    let merged_planes = match c.u16() {
        0 => (0..n_channels)
            .map(|_| c.take(width * height).to_vec())
            .collect(),
        1 => {
            let row_lengths: Vec<usize> = (0..usize::from(n_channels) * height)
                .map(|_| c.u16() as usize)
                .collect();
            let mut rows = row_lengths
                .iter()
                .map(|&len| unpack_bits(c.take(len), width));
            (0..n_channels)
                .map(|_| rows.by_ref().take(height).flatten().collect::<Vec<u8>>())
                .collect()
        }
        other => panic!("unexpected merged compression {other}"),
    };
    assert_eq!(c.pos, bytes.len(), "file ends after the merged image");
    ParsedPsd {
        width_px,
        height_px,
        n_channels,
        signed_layer_count,
        layers,
        merged_planes,
    }
}

fn interleave(planes: &[&[u8]]) -> Vec<u8> {
    let n_pixels = planes[0].len();
    (0..n_pixels)
        .flat_map(|idx| planes.iter().map(move |plane| plane[idx]))
        .collect()
}

fn layer_rgba(layer: &ParsedLayer) -> Vec<u8> {
    let plane = |id: i16| -> &[u8] {
        &layer
            .channels
            .iter()
            .find(|(channel_id, _)| *channel_id == id)
            .unwrap()
            .1
    };
    interleave(&[plane(0), plane(1), plane(2), plane(-1)])
}

/// Orange background with a teal disc and a purple bar, split into layers.
fn sample_layers() -> (RgbImage, Layers) {
    let image = RgbImage::from_fn(40, 30, |x, y| {
        let (dx, dy) = (x as f32 - 12.5, y as f32 - 14.0);
        if dx * dx + dy * dy < 64.0 {
            Rgb([20, 160, 150])
        } else if (26..34).contains(&x) && (5..25).contains(&y) {
            Rgb([120, 40, 160])
        } else {
            Rgb([240, 150, 40])
        }
    });
    let layers = layer_split(&image, 3).unwrap();
    (image, layers)
}

fn psd_bytes(layers: &Layers) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_psd(&mut bytes, layers).unwrap();
    bytes
}

#[test]
fn layers_names_sizes_and_pixels_round_trip() {
    let (image, layers) = sample_layers();
    let parsed = parse(&psd_bytes(&layers));
    assert_eq!((parsed.width_px, parsed.height_px), (40, 30));
    assert_eq!(parsed.n_channels, 3, "opaque composite: RGB merged image");
    assert_eq!(
        parsed.signed_layer_count, 3,
        "positive count: merged image has no alpha"
    );
    assert_eq!(parsed.layers.len(), layers.len());
    for (parsed_layer, layer) in parsed.layers.iter().zip(&layers) {
        assert_eq!(parsed_layer.bounds, [0, 0, 30, 40]);
        assert_eq!(parsed_layer.pascal_name, layer.name);
        assert_eq!(
            parsed_layer.unicode_name.as_deref(),
            Some(layer.name.as_str())
        );
        assert_eq!(parsed_layer.blend, b"norm");
        assert_eq!(parsed_layer.opacity, 255);
        assert_eq!(
            parsed_layer.flags & FLAG_HIDDEN,
            0,
            "visible: hidden bit clear"
        );
        let ids: Vec<i16> = parsed_layer.channels.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [-1, 0, 1, 2]);
        assert_eq!(layer_rgba(parsed_layer), layer.image.as_raw().as_slice());
    }
    let merged = interleave(
        &parsed
            .merged_planes
            .iter()
            .map(Vec::as_slice)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        merged,
        image.as_raw().as_slice(),
        "merged image is the picture"
    );
}

#[test]
fn unicode_names_go_to_luni_and_pascal_names_stay_ascii() {
    let mut layers = Layers::new(3, 2);
    layers
        .push(
            "Hintergrund ☕ 背景",
            RgbaImage::from_pixel(3, 2, Rgba([1, 2, 3, 255])),
        )
        .unwrap();
    layers.push("", RgbaImage::new(3, 2)).unwrap();
    layers.push("x".repeat(300), RgbaImage::new(3, 2)).unwrap();
    let parsed = parse(&psd_bytes(&layers));
    let first = &parsed.layers[0];
    assert_eq!(first.pascal_name, "Hintergrund _ __");
    assert_eq!(first.unicode_name.as_deref(), Some("Hintergrund ☕ 背景"));
    assert_eq!(parsed.layers[1].unicode_name.as_deref(), Some(""));
    assert_eq!(parsed.layers[2].pascal_name.len(), 255);
    assert_eq!(
        parsed.layers[2].unicode_name.as_deref(),
        Some("x".repeat(300).as_str())
    );
}

#[test]
fn translucent_composite_gets_merged_alpha_and_negative_count() {
    let mut layers = Layers::new(4, 4);
    layers
        .push(
            "half",
            RgbaImage::from_fn(4, 4, |x, _| Rgba([200, 0, 0, (x * 80) as u8])),
        )
        .unwrap();
    let parsed = parse(&psd_bytes(&layers));
    assert_eq!(parsed.signed_layer_count, -1);
    assert_eq!(parsed.n_channels, 4);
    assert_eq!(parsed.merged_planes[3], [0, 80, 160, 240].repeat(4));
    // Colours are stored over white: red 200 at alpha 80/255 shows as 200·a + 255·(1 - a).
    assert_eq!(parsed.merged_planes[0], [255, 238, 220, 203].repeat(4));
    assert_eq!(parsed.merged_planes[1], [255, 175, 95, 15].repeat(4));
}

#[test]
fn psd_crate_reads_it() {
    let (image, layers) = sample_layers();
    let psd = psd::Psd::from_bytes(&psd_bytes(&layers)).unwrap();
    assert_eq!((psd.width(), psd.height()), (40, 30));
    assert_eq!(psd.layers().len(), 3);
    // Records are stored bottom first, as Photoshop does; psd lists them top first.
    let names: Vec<&str> = psd
        .layers()
        .iter()
        .rev()
        .map(|layer| layer.name())
        .collect();
    let expected: Vec<&str> = layers.iter().map(|layer| layer.name.as_str()).collect();
    assert_eq!(names, expected);
    // The merged image section, as psd decodes it.
    let expected_merged = image::DynamicImage::ImageRgb8(image).to_rgba8().into_raw();
    assert_eq!(psd.rgba(), expected_merged);
    for (psd_layer, layer) in psd.layers().iter().rev().zip(&layers) {
        assert_eq!((psd_layer.layer_left(), psd_layer.layer_top()), (0, 0));
        // psd reports the last pixel (inclusive), while the file stores the exclusive edge.
        assert_eq!(
            (psd_layer.layer_right(), psd_layer.layer_bottom()),
            (39, 29)
        );
        assert_eq!((psd_layer.width(), psd_layer.height()), (40, 30));
        // psd 0.3.5 reads flag bit 1 as the specification words it ("visible"), unlike
        // Photoshop, psd-tools and GIMP, which treat it as "hidden". We write it clear, so
        // this old reader calls our (visible) layers invisible: the trap, pinned.
        assert!(!psd_layer.visible());
        // Its per-layer decode fills transparent pixels' colours with zeros; compare alpha, and
        // colours where the layer is opaque.
        let decoded = psd_layer.rgba();
        for (got, want) in decoded.chunks(4).zip(layer.image.pixels()) {
            assert_eq!(got[3], want.0[3]);
            if want.0[3] == 255 {
                assert_eq!(got[..3], want.0[..3]);
            }
        }
    }
}

#[test]
fn packbits_round_trips_runs_and_literals() {
    let mut rng = 12345_u32;
    let mut noisy = Vec::new();
    for _ in 0..700 {
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noisy.push((rng >> 24) as u8 % 4);
    }
    let rows: [Vec<u8>; 6] = [
        vec![7],
        vec![1, 2],
        vec![9; 300],
        (0..=255).collect(),
        [vec![1, 2, 3], vec![5; 3], vec![6, 6], vec![7]].concat(),
        noisy,
    ];
    for row in rows {
        let mut packed = Vec::new();
        packbits_row(&mut packed, &row);
        assert_eq!(unpack_bits(&packed, row.len()), row);
        assert!(
            packed.len() <= row.len() + row.len().div_ceil(128),
            "worst case bound"
        );
    }
    let mut packed = Vec::new();
    packbits_row(&mut packed, &[9; 300]);
    assert_eq!(packed, [129, 9, 129, 9, 213, 9], "runs of 128, 128 and 44");
}

#[test]
fn refuses_what_psd_cannot_hold() {
    assert!(matches!(
        write_psd(Vec::new(), &Layers::new(4, 4)),
        Err(ImagingError::NoLayers)
    ));
    let mut wide = Layers::new(30_001, 1);
    wide.push("wide", RgbaImage::new(30_001, 1)).unwrap();
    let err = write_psd(Vec::new(), &wide).unwrap_err();
    assert_eq!(
        err.to_string(),
        "width is too large for PSD (30001, at most 30000)"
    );
    assert!(matches!(
        write_psd(Vec::new(), &Layers::new(0, 4)),
        Err(ImagingError::EmptyImage { .. })
    ));
}
