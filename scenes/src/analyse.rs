//! Reading a generated image back: background colour, object colour and object position.
//!
//! The quality gates of the tiny model use these: the background is the nearest palette colour of the
//! median border pixel; object pixels are those whose nearest palette colour differs from the
//! background's and that are far enough from the background's RGB value; the object colour is the
//! most frequent nearest palette colour among them and its position the 3×3 cell of their centroid.

use crate::{Colour, Position};

/// What [`analyse`] found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Nearest palette colour of the median border pixel.
    pub background: Colour,
    /// Most frequent palette colour among object pixels; `None` if no object pixels were found.
    pub object_colour: Option<Colour>,
    /// Grid cell of the object pixels' centroid; `None` if none were found.
    pub object_position: Option<Position>,
    /// Number of object pixels.
    pub object_pixels: usize,
}

/// Minimum RGB distance from the background for a pixel to count as object (antialiased edges and
/// slight colour noise stay background).
const OBJECT_DISTANCE: f32 = 60.0;

/// Analyses an RGB8 row-major square image of side `side_px`. Returns `None` if the buffer does not
/// hold `side_px²` RGB pixels.
pub fn analyse(rgb: &[u8], side_px: usize) -> Option<Analysis> {
    if side_px == 0 || rgb.len() != side_px * side_px * 3 {
        return None;
    }
    let pixel = |x: usize, y: usize| -> [f32; 3] {
        let i = (y * side_px + x) * 3;
        [
            f32::from(rgb[i]),
            f32::from(rgb[i + 1]),
            f32::from(rgb[i + 2]),
        ]
    };
    let mut border: Vec<[f32; 3]> = Vec::new();
    for i in 0..side_px {
        border.push(pixel(i, 0));
        border.push(pixel(i, side_px - 1));
        border.push(pixel(0, i));
        border.push(pixel(side_px - 1, i));
    }
    let median = |ch: usize| -> f32 {
        let mut v: Vec<f32> = border.iter().map(|p| p[ch]).collect();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let bg_rgb = [median(0), median(1), median(2)];
    let background = Colour::nearest(bg_rgb);
    let mut counts = [0usize; 10];
    let (mut sum_x, mut sum_y, mut n) = (0f64, 0f64, 0usize);
    for y in 0..side_px {
        for x in 0..side_px {
            let p = pixel(x, y);
            let d: f32 = (0..3)
                .map(|i| (p[i] - bg_rgb[i]).powi(2))
                .sum::<f32>()
                .sqrt();
            let nearest = Colour::nearest(p);
            if d < OBJECT_DISTANCE || nearest == background {
                continue;
            }
            if let Some(idx) = Colour::ALL.iter().position(|c| *c == nearest) {
                counts[idx] += 1;
            }
            sum_x += x as f64 + 0.5;
            sum_y += y as f64 + 0.5;
            n += 1;
        }
    }
    let object_colour = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .max_by_key(|(_, c)| **c)
        .and_then(|(i, _)| Colour::ALL.get(i).copied());
    let object_position = (n > 0).then(|| {
        let cell = |s: f64| {
            ((s / n as f64 / side_px as f64 * 3.0)
                .floor()
                .clamp(0.0, 2.0)) as usize
        };
        Position::from_cell(cell(sum_x), cell(sum_y)).unwrap_or(Position::Centre)
    });
    Some(Analysis {
        background,
        object_colour,
        object_position,
        object_pixels: n,
    })
}
