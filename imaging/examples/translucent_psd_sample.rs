//! Writes a PSD whose layers do not cover the canvas (so its merged image has transparency),
//! plus the layers' composite as PNG.
//!
//! Usage: `cargo run -p veetance-imaging --example translucent_psd_sample -- OUT_PREFIX`.
//! It prints the PNG path, then the PSD path, for `tests/check_psd.py` (psd-tools) to check:
//! the merged image of such a PSD is stored matted over white, which readers undo.

use std::error::Error;
use std::path::PathBuf;

use veetance_imaging::{Layers, Rgba, RgbaImage, composite, write_new_file, write_png, write_psd};

fn main() -> Result<(), Box<dyn Error>> {
    let prefix = PathBuf::from(std::env::args().nth(1).ok_or("usage: OUT_PREFIX")?);
    let (width_px, height_px) = (48_u32, 32_u32);
    let mut layers = Layers::new(width_px, height_px);
    // A green wash fading in from the left, then a red-to-blue wash fading in from the top.
    layers.push(
        "green wash",
        RgbaImage::from_fn(width_px, height_px, |x, _| {
            Rgba([20, 180, 60, (x * 5) as u8])
        }),
    )?;
    layers.push(
        "red to blue",
        RgbaImage::from_fn(width_px, height_px, |x, y| {
            Rgba([(255 - x * 5) as u8, 40, (x * 5) as u8, (y * 8) as u8])
        }),
    )?;
    let merged = composite(&layers);
    let png_path = write_new_file(&prefix, "png", |writer| {
        write_png(writer, &merged, &[] as &[(&str, &str)])
    })?;
    let psd_path = write_new_file(&prefix, "psd", |writer| write_psd(writer, &layers))?;
    println!("{}", png_path.display());
    println!("{}", psd_path.display());
    Ok(())
}
