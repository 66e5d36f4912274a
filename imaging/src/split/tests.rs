//! Tests of LayerSplit on pictures drawn here: antialiased shapes, gradients and noise.

use image::{Rgb, RgbImage, Rgba, RgbaImage};

use super::*;
use crate::pixels::composite;

const BLUE: [u8; 3] = [30, 60, 200];
const RED: [u8; 3] = [220, 30, 40];
const GREEN: [u8; 3] = [40, 200, 70];

/// Paints `colour` over `image` where `inside(x, y)` holds, with 4x4 supersampled (box filter)
/// antialiasing, blending in sRGB like most rasterisers. Returns each pixel's coverage.
fn paint(image: &mut RgbImage, colour: [u8; 3], inside: impl Fn(f32, f32) -> bool) -> Vec<f32> {
    let mut coverages = Vec::new();
    for y in 0..image.height() {
        for x in 0..image.width() {
            let mut n_inside = 0;
            for sub_y in 0..4 {
                for sub_x in 0..4 {
                    let sample_x = x as f32 + (sub_x as f32 + 0.5) / 4.0;
                    let sample_y = y as f32 + (sub_y as f32 + 0.5) / 4.0;
                    n_inside += u32::from(inside(sample_x, sample_y));
                }
            }
            let coverage = n_inside as f32 / 16.0;
            let pixel = image.get_pixel_mut(x, y);
            for (channel, fg) in pixel.0.iter_mut().zip(colour) {
                let blended = coverage * f32::from(fg) + (1.0 - coverage) * f32::from(*channel);
                *channel = blended.round() as u8;
            }
            coverages.push(coverage);
        }
    }
    coverages
}

fn circle(centre_x: f32, centre_y: f32, radius: f32) -> impl Fn(f32, f32) -> bool {
    move |x, y| (x - centre_x).powi(2) + (y - centre_y).powi(2) <= radius * radius
}

/// A square of half-side `half`, rotated by `angle_rad`.
fn square(centre_x: f32, centre_y: f32, half: f32, angle_rad: f32) -> impl Fn(f32, f32) -> bool {
    let (sin, cos) = angle_rad.sin_cos();
    move |x, y| {
        let (dx, dy) = (x - centre_x, y - centre_y);
        (dx * cos + dy * sin).abs() <= half && (-dx * sin + dy * cos).abs() <= half
    }
}

/// Blue background, red circle top left, green rotated square bottom right.
fn two_objects() -> (RgbImage, Vec<f32>, Vec<f32>) {
    let mut image = RgbImage::from_pixel(64, 64, Rgb(BLUE));
    let circle_cover = paint(&mut image, RED, circle(18.3, 20.7, 10.2));
    let square_cover = paint(&mut image, GREEN, square(44.0, 42.0, 9.0, 0.5));
    (image, circle_cover, square_cover)
}

/// A small deterministic generator (64-bit LCG, high bits), so the noise is the same everywhere.
struct Lcg(u64);

impl Lcg {
    fn next_u8(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

/// Vertical gradient, noisy, with antialiased shapes of several colours, two of them touching.
fn busy_picture(seed: u64) -> RgbImage {
    let mut rng = Lcg(seed);
    let mut image = RgbImage::from_fn(72, 56, |x, y| {
        Rgb([(40 + y * 2) as u8, (90 + x) as u8, (180 - y) as u8])
    });
    paint(&mut image, RED, circle(20.5, 18.2, 11.0));
    paint(&mut image, GREEN, square(30.0, 26.0, 7.5, 0.3));
    paint(&mut image, [250, 240, 90], circle(58.0, 40.0, 6.3));
    paint(&mut image, [20, 20, 20], square(12.0, 46.0, 5.2, 0.0));
    for pixel in image.pixels_mut() {
        for channel in pixel.0.iter_mut() {
            let noise = i16::from(rng.next_u8() % 9) - 4;
            *channel = (i16::from(*channel) + noise).clamp(0, 255) as u8;
        }
    }
    image
}

fn max_composite_error(image: &RgbImage, layers: &Layers) -> u8 {
    let merged = composite(layers);
    let mut max_error = 0;
    for (original, merged) in image.pixels().zip(merged.pixels()) {
        assert_eq!(merged.0[3], 255, "the composite must be opaque");
        for (a, b) in original.0.iter().zip(merged.0) {
            max_error = max_error.max(a.abs_diff(b));
        }
    }
    max_error
}

fn alpha_at(layer: &RgbaImage, x: u32, y: u32) -> u8 {
    layer.get_pixel(x, y).0[3]
}

fn assert_close(actual: [u8; 3], expected: [u8; 3], tolerance: u8, what: &str) {
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            a.abs_diff(e) <= tolerance,
            "{what}: {actual:?} vs {expected:?}"
        );
    }
}

#[test]
fn two_objects_become_background_plus_one_layer_each() {
    let (image, circle_cover, square_cover) = two_objects();
    let layers = layer_split(&image, 3).unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(max_composite_error(&image, &layers), 0);

    let background = &layers.get(0).unwrap().image;
    assert_eq!(layers.get(0).unwrap().name, "background");
    assert!(
        background.pixels().all(|pixel| pixel.0[3] == 255),
        "background must be opaque"
    );
    // Behind both objects the background continues blue, not red or green.
    for (x, y) in [(18, 20), (44, 42), (0, 0), (63, 63)] {
        let Rgba([r, g, b, _]) = *background.get_pixel(x, y);
        assert_close([r, g, b], BLUE, 2, &format!("background at ({x}, {y})"));
    }

    // Exactly one object layer holds each shape, opaque at its centre, and nothing else.
    let holder = |x, y| (1..3).find(|&idx| alpha_at(&layers.get(idx).unwrap().image, x, y) == 255);
    let circle_idx = holder(18, 20).expect("a layer holds the circle");
    let square_idx = holder(44, 42).expect("a layer holds the square");
    assert_ne!(circle_idx, square_idx);
    let circle_layer = &layers.get(circle_idx).unwrap().image;
    let square_layer = &layers.get(square_idx).unwrap().image;
    assert!(layers.get(circle_idx).unwrap().name.starts_with("region "));

    for (idx, (&circle_coverage, &square_coverage)) in
        circle_cover.iter().zip(&square_cover).enumerate()
    {
        let (x, y) = ((idx % 64) as u32, (idx / 64) as u32);
        let circle_alpha = alpha_at(circle_layer, x, y);
        let square_alpha = alpha_at(square_layer, x, y);
        // No stray pixels: a layer is transparent wherever its shape is absent.
        if circle_coverage == 0.0 {
            assert_eq!(circle_alpha, 0, "circle layer at ({x}, {y})");
        }
        if square_coverage == 0.0 {
            assert_eq!(square_alpha, 0, "square layer at ({x}, {y})");
        }
        // Antialiased edges carry coverage in alpha and the pure object colour.
        if (0.15..=0.85).contains(&circle_coverage) {
            let expected_alpha = circle_coverage * 255.0;
            assert!(
                (f32::from(circle_alpha) - expected_alpha).abs() <= 16.0,
                "circle edge at ({x}, {y}): alpha {circle_alpha}, coverage {circle_coverage}"
            );
            let Rgba([r, g, b, _]) = *circle_layer.get_pixel(x, y);
            assert_close(
                [r, g, b],
                RED,
                16,
                &format!("circle edge colour at ({x}, {y})"),
            );
        }
        if circle_coverage == 1.0 {
            assert_eq!(circle_alpha, 255, "circle interior at ({x}, {y})");
        }
        if square_coverage == 1.0 {
            assert_eq!(square_alpha, 255, "square interior at ({x}, {y})");
        }
    }
}

#[test]
fn surplus_layers_are_left_empty_rather_than_invented() {
    let (image, _, _) = two_objects();
    let layers = layer_split(&image, 5).unwrap();
    assert_eq!(layers.len(), 5);
    assert_eq!(max_composite_error(&image, &layers), 0);
    for idx in 3..5 {
        let layer = layers.get(idx).unwrap();
        assert_eq!(layer.name, format!("empty {idx}"));
        assert!(layer.image.pixels().all(|pixel| pixel.0[3] == 0));
    }
}

#[test]
fn two_layers_put_both_objects_above_the_background() {
    let (image, _, _) = two_objects();
    let layers = layer_split(&image, 2).unwrap();
    assert_eq!(max_composite_error(&image, &layers), 0);
    let objects = &layers.get(1).unwrap().image;
    assert_eq!(alpha_at(objects, 18, 20), 255);
    assert_eq!(alpha_at(objects, 44, 42), 255);
    assert_eq!(alpha_at(objects, 2, 60), 0);
}

#[test]
fn composite_reproduces_busy_pictures_for_every_layer_count() {
    for seed in [1, 2] {
        let image = busy_picture(seed);
        for n_layers in MIN_LAYERS..=MAX_LAYERS {
            let layers = layer_split(&image, n_layers).unwrap();
            assert_eq!(layers.len(), n_layers);
            let error = max_composite_error(&image, &layers);
            assert!(error <= 1, "seed {seed}, {n_layers} layers: error {error}");
            let background = &layers.get(0).unwrap().image;
            assert!(background.pixels().all(|pixel| pixel.0[3] == 255));
        }
    }
}

#[test]
fn busy_picture_layers_are_regions_not_noise() {
    let image = busy_picture(3);
    let layers = layer_split(&image, 6).unwrap();
    // The red circle's centre and the yellow circle's centre sit on opaque pixels of object
    // layers (not the background), and different ones: they differ in colour and place.
    let holder = |x, y| (1..6).find(|&idx| alpha_at(&layers.get(idx).unwrap().image, x, y) == 255);
    let red = holder(18, 14).expect("the red circle has a layer");
    let yellow = holder(58, 40).expect("the yellow circle has a layer");
    assert_ne!(red, yellow);
    // The noisy gradient stays on the background: far from every shape no object pixel exists.
    for layer in layers.iter().skip(1) {
        assert_eq!(alpha_at(&layer.image, 70, 2), 0, "{}", layer.name);
        assert_eq!(alpha_at(&layer.image, 45, 5), 0, "{}", layer.name);
    }
}

#[test]
fn split_is_deterministic() {
    let image = busy_picture(7);
    assert_eq!(
        layer_split(&image, 4).unwrap(),
        layer_split(&image, 4).unwrap()
    );
}

#[test]
fn uniform_picture_is_all_background() {
    let image = RgbImage::from_pixel(9, 7, Rgb([12, 34, 56]));
    let layers = layer_split(&image, 3).unwrap();
    assert_eq!(max_composite_error(&image, &layers), 0);
    assert!(
        layers
            .iter()
            .skip(1)
            .all(|layer| layer.image.pixels().all(|p| p.0[3] == 0))
    );
}

#[test]
fn one_pixel_and_one_row_pictures_work() {
    for (width, height) in [(1, 1), (17, 1), (1, 9)] {
        let image = RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 40) as u8, (y * 25) as u8, 7])
        });
        let layers = layer_split(&image, 3).unwrap();
        assert_eq!(max_composite_error(&image, &layers), 0, "{width}x{height}");
    }
}

#[test]
fn rejects_bad_layer_counts_and_empty_pictures() {
    let image = RgbImage::new(4, 4);
    for n_layers in [0, 1, 9] {
        let err = layer_split(&image, n_layers).unwrap_err();
        assert!(
            matches!(err, ImagingError::LayerCountOutOfRange { .. }),
            "{err}"
        );
    }
    let err = layer_split(&RgbImage::new(0, 3), 2).unwrap_err();
    assert!(matches!(err, ImagingError::EmptyImage { .. }), "{err}");
}

#[test]
fn unmix_always_reproduces_the_picture() {
    // Exhaustive over a lattice of levels: alpha-over of the result on `under` rounds to
    // `picture`, whatever the (even absurd) coverage estimate.
    for picture in (0..=255_u16).step_by(5).map(|level| level as u8) {
        for under in (0..=255_u16).step_by(3).map(|level| level as u8) {
            for estimate in [0.0, 0.01, 0.3, 0.5, 0.97, 1.0] {
                let picture3 = [picture, 255 - picture, picture / 2];
                let under3 = [under, under / 3, 255 - under];
                let (colour, alpha) = unmix(picture3, under3, estimate);
                let a = f32::from(alpha) / 255.0;
                for ((c, u), p) in colour.iter().zip(under3).zip(picture3) {
                    let over =
                        (f32::from(*c) / 255.0 * a + f32::from(u) / 255.0 * (1.0 - a)) * 255.0;
                    assert!(
                        (over - f32::from(p)).abs() < 0.5 + 1e-3,
                        "picture {picture3:?} under {under3:?} estimate {estimate}: \
                         colour {colour:?} alpha {alpha} gives {over}"
                    );
                }
            }
        }
    }
}

#[test]
fn coverage_is_the_projection_between_background_and_object() {
    let half = coverage([125, 45, 120], BLUE, Some(RED.map(f32::from))).unwrap();
    assert!((half.fraction - 0.5).abs() < 0.02, "{half:?}");
    // |RED - BLUE| = sqrt(190² + 30² + 160²) levels.
    assert!((half.contrast_levels - 250.2).abs() < 0.1, "{half:?}");
    assert_eq!(
        coverage(BLUE, BLUE, Some(RED.map(f32::from)))
            .unwrap()
            .fraction,
        0.0
    );
    assert_eq!(coverage(RED, BLUE, Some(BLUE.map(f32::from))), None);
}

/// Three passes of a 3x3 box blur: close to a Gaussian of sigma 1.4, about as soft as the
/// outlines a VAE decoder draws.
fn blurred(image: &RgbImage) -> RgbImage {
    let mut current = image.clone();
    for _ in 0..3 {
        let source = current.clone();
        let (width, height) = source.dimensions();
        current = RgbImage::from_fn(width, height, |x, y| {
            let mut sum = [0_u32; 3];
            let mut n_samples = 0;
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    for (acc, channel) in sum.iter_mut().zip(source.get_pixel(nx, ny).0) {
                        *acc += u32::from(channel);
                    }
                    n_samples += 1;
                }
            }
            Rgb(sum.map(|acc| ((acc + n_samples / 2) / n_samples) as u8))
        });
    }
    current
}

/// Asserts that a gradient picture with the red circle and the green square splits into the
/// gradient background, one layer per shape and an empty spare layer.
fn check_gradient_with_two_objects(image: &RgbImage) {
    let layers = layer_split(image, 4).unwrap();
    assert!(max_composite_error(image, &layers) <= 1);
    let holder = |x, y| (1..4).find(|&idx| alpha_at(&layers.get(idx).unwrap().image, x, y) == 255);
    let circle_idx = holder(18, 20).expect("a layer holds the circle");
    let square_idx = holder(44, 42).expect("a layer holds the square");
    assert_ne!(circle_idx, square_idx);
    // The gradient is not cut into bands: the spare layer is empty and the corners are
    // background only.
    let spare_idx = 6 - circle_idx - square_idx;
    assert!(
        layers
            .get(spare_idx)
            .unwrap()
            .image
            .pixels()
            .all(|pixel| pixel.0[3] == 0)
    );
    for (x, y) in [(0, 0), (63, 0), (0, 63), (63, 63)] {
        assert!(
            layers
                .iter()
                .skip(1)
                .all(|layer| alpha_at(&layer.image, x, y) == 0)
        );
    }
    // The outline lands on the object layer as partial alpha, not as an opaque fringe.
    let circle_layer = &layers.get(circle_idx).unwrap().image;
    let edge_alphas: Vec<u8> = (0..64).map(|x| alpha_at(circle_layer, x, 20)).collect();
    assert!(
        edge_alphas.iter().any(|&alpha| (40..=215).contains(&alpha)),
        "{edge_alphas:?}"
    );
}

fn gradient_with_two_objects() -> RgbImage {
    let mut image = RgbImage::from_fn(64, 64, |x, y| Rgb([(30 + y) as u8, (60 + x) as u8, 200]));
    paint(&mut image, RED, circle(18.3, 20.7, 10.2));
    paint(&mut image, GREEN, square(44.0, 42.0, 9.0, 0.5));
    image
}

#[test]
fn sharp_outlines_on_a_gradient_give_one_layer_per_object() {
    check_gradient_with_two_objects(&gradient_with_two_objects());
}

#[test]
fn blurred_noisy_outlines_still_give_one_layer_per_object() {
    let mut image = blurred(&gradient_with_two_objects());
    let mut rng = Lcg(11);
    for pixel in image.pixels_mut() {
        for channel in pixel.0.iter_mut() {
            let noise = i16::from(rng.next_u8() % 7) - 3;
            *channel = (i16::from(*channel) + noise).clamp(0, 255) as u8;
        }
    }
    check_gradient_with_two_objects(&image);
}

#[test]
fn pure_noise_and_checkerboards_still_composite_exactly() {
    let mut rng = Lcg(99);
    let noise = RgbImage::from_fn(40, 36, |_, _| {
        Rgb([rng.next_u8(), rng.next_u8(), rng.next_u8()])
    });
    let checkerboard = RgbImage::from_fn(33, 29, |x, y| {
        if (x / 2 + y / 2) % 2 == 0 {
            Rgb(RED)
        } else {
            Rgb(BLUE)
        }
    });
    for image in [noise, checkerboard] {
        for n_layers in [2, 5, 8] {
            let layers = layer_split(&image, n_layers).unwrap();
            assert_eq!(layers.len(), n_layers);
            assert!(max_composite_error(&image, &layers) <= 1);
        }
    }
}

#[test]
fn inconsistent_tables_are_errors_that_name_the_table() {
    // A table of the wrong size, or a label that points past a table, is a bug in LayerSplit.
    // It must come out as an error rather than as a default read or a write dropped, which
    // would give layers that silently differ from the picture.
    let (image, _, _) = two_objects();
    let grid = Grid {
        width: 64,
        height: 64,
    };
    let srgb: Vec<[u8; 3]> = image.pixels().map(|pixel| pixel.0).collect();

    // An owner map one pixel short of the picture.
    let short_owner = vec![0_u8; grid.len() - 1];
    let err = build_layers(&grid, &srgb, &short_owner, 0, 2).unwrap_err();
    assert!(
        matches!(
            err,
            ImagingError::SplitSizeMismatch {
                what: "owner map",
                len: 4095,
                expected: 4096
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("owner map"), "{err}");

    // A pixel labelled with a region that the region graph does not have.
    let lab = oklab_pixels(&srgb).unwrap();
    let cluster_of_pixel = cluster_colours(&srgb, &lab, 4).unwrap();
    let (mut region_of_pixel, graph) = build_regions(&grid, &cluster_of_pixel, &lab).unwrap();
    let missing_region = graph.regions.len();
    region_of_pixel[0] = missing_region;
    let err = assign_layers(&graph, &region_of_pixel, 2).unwrap_err();
    assert!(
        matches!(err, ImagingError::SplitIndexOutOfRange { idx, .. } if idx == missing_region),
        "{err}"
    );
}
