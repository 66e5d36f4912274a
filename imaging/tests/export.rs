//! The Export node's path through the public API: split, export every format, read back.

use std::path::Path;

use veetance_imaging::{
    ExportFormat, ImagingError, KEY_PARAMETERS, KEY_WORKFLOW, Layers, Rgb, RgbImage, composite,
    export, layer_split, load_image, read_png_rgba, read_png_text,
};

fn picture() -> RgbImage {
    RgbImage::from_fn(48, 32, |x, y| {
        let (dx, dy) = (x as f32 - 16.0, y as f32 - 15.0);
        if dx * dx + dy * dy < 80.0 {
            Rgb([230, 200, 20])
        } else {
            Rgb([20, 40, 90])
        }
    })
}

fn file_names(dir: &Path) -> Vec<String> {
    // Unreadable entries would show up as missing names, which the assertions catch.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn export_writes_every_format_under_fresh_names() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("golden");
    let image = picture();
    let layers = layer_split(&image, 3).unwrap();
    let workflow = "Workflow(version: 1, name: \"golden\", nodes: {})";
    let texts = [(KEY_WORKFLOW, workflow), (KEY_PARAMETERS, "seed: 42")];

    let png = export(&prefix, ExportFormat::Png, Some(&image), None, &texts).unwrap();
    let psd = export(&prefix, ExportFormat::Psd, None, Some(&layers), &texts).unwrap();
    let jpg = export(&prefix, ExportFormat::Jpeg, Some(&image), None, &texts).unwrap();
    let webp = export(&prefix, ExportFormat::Webp, None, Some(&layers), &texts).unwrap();
    let png_again = export(&prefix, ExportFormat::Png, None, Some(&layers), &texts).unwrap();
    assert_eq!(
        file_names(dir.path()),
        [
            "golden.jpg",
            "golden.png",
            "golden.psd",
            "golden.webp",
            "golden_00001.png"
        ]
    );

    let png_bytes = std::fs::read(&png).unwrap();
    let texts_back = read_png_text(&png_bytes).unwrap();
    assert_eq!(
        texts_back[0],
        (KEY_WORKFLOW.to_owned(), workflow.to_owned())
    );
    assert_eq!(load_image(&png_bytes).unwrap(), image);
    // A PNG of the layers is their composite, which is the picture.
    let (flattened, _) = read_png_rgba(&std::fs::read(&png_again).unwrap()).unwrap();
    assert_eq!(flattened, composite(&layers));
    assert_eq!(load_image(&std::fs::read(&webp).unwrap()).unwrap(), image);
    assert_eq!(
        load_image(&std::fs::read(&jpg).unwrap())
            .unwrap()
            .dimensions(),
        (48, 32)
    );
    assert_eq!(&std::fs::read(&psd).unwrap()[..4], b"8BPS");
}

#[test]
fn export_needs_something_and_a_known_format() {
    let dir = tempfile::tempdir().unwrap();
    let none: Option<&Layers> = None;
    let err = export(
        &dir.path().join("x"),
        ExportFormat::Png,
        None,
        none,
        &[("k", "v")],
    );
    assert!(matches!(err, Err(ImagingError::NothingToExport)));
    assert!(file_names(dir.path()).is_empty());
    assert_eq!("JPEG".parse::<ExportFormat>().unwrap(), ExportFormat::Jpeg);
    let err = "tiff".parse::<ExportFormat>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown export format \"tiff\"; expected png, psd, jpg or webp"
    );
}

#[test]
fn psd_of_a_plain_image_has_one_layer() {
    let dir = tempfile::tempdir().unwrap();
    let image = picture();
    let path = export(
        &dir.path().join("flat"),
        ExportFormat::Psd,
        Some(&image),
        None,
        &[("k", "v")],
    )
    .unwrap();
    let psd = psd::Psd::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(psd.layers().len(), 1);
    assert_eq!(psd.layers()[0].name(), "image");
}
