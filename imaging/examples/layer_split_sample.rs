//! Writes a LayerSplit sample: the picture as PNG (with iTXt metadata) and its layers as a PSD.
//!
//! Usage: `cargo run -p veetance-imaging --example layer_split_sample -- OUT_PREFIX [N_LAYERS]
//! [INPUT_IMAGE]`. Without an input image it draws antialiased shapes on a gradient. It prints
//! the written paths, one per line, for `tests/check_psd.py` (psd-tools) to check.

use std::error::Error;
use std::path::PathBuf;

use veetance_imaging::{
    ImageRef, KEY_PARAMETERS, Rgb, RgbImage, layer_split, load_image, write_new_file, write_png,
    write_psd,
};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let prefix = PathBuf::from(
        args.next()
            .ok_or("usage: OUT_PREFIX [N_LAYERS] [INPUT_IMAGE]")?,
    );
    let n_layers: usize = args.next().map_or(Ok(4), |arg| arg.parse())?;
    let picture = match args.next() {
        Some(input) => load_image(&std::fs::read(input)?)?,
        None => drawn_picture(),
    };
    let layers = layer_split(&picture, n_layers)?;
    let parameters = format!("layer_split_sample, {n_layers} layers");
    let png_path = write_new_file(&prefix, "png", |writer| {
        write_png(
            writer,
            ImageRef::Rgb(&picture),
            &[(KEY_PARAMETERS, parameters.as_str())],
        )
    })?;
    let psd_path = write_new_file(&prefix, "psd", |writer| write_psd(writer, &layers))?;
    println!("{}", png_path.display());
    println!("{}", psd_path.display());
    Ok(())
}

/// A vertical gradient with an antialiased red disc and green square (4x4 supersampling).
fn drawn_picture() -> RgbImage {
    let (width_px, height_px) = (160_u32, 120_u32);
    RgbImage::from_fn(width_px, height_px, |x, y| {
        let background = [
            40.0 + y as f32,
            90.0 + x as f32 * 0.5,
            200.0 - y as f32 * 0.5,
        ];
        let mut disc_hits = 0_u32;
        let mut square_hits = 0_u32;
        for sub in 0..16 {
            let sample_x = x as f32 + (sub % 4) as f32 / 4.0 + 0.125;
            let sample_y = y as f32 + (sub / 4) as f32 / 4.0 + 0.125;
            let (dx, dy) = (sample_x - 55.3, sample_y - 58.7);
            disc_hits += u32::from(dx * dx + dy * dy <= 30.0 * 30.0);
            square_hits +=
                u32::from((100.4..140.2).contains(&sample_x) && (30.6..85.1).contains(&sample_y));
        }
        let mut colour = background;
        for (hits, paint) in [
            (disc_hits, [220.0, 30.0, 40.0]),
            (square_hits, [40.0, 200.0, 70.0]),
        ] {
            let coverage = hits as f32 / 16.0;
            for (channel, paint_channel) in colour.iter_mut().zip(paint) {
                *channel = coverage * paint_channel + (1.0 - coverage) * *channel;
            }
        }
        Rgb(colour.map(|channel| channel.round().clamp(0.0, 255.0) as u8))
    })
}
