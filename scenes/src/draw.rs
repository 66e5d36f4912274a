//! Rasterising shapes: coverage by 4×4 supersampling of an inside test in shape-local coordinates.

use crate::{Object, Rendered, Scene, Shape};

/// Samples per pixel side; 16 samples give smooth enough edges at 64 px.
const SUPERSAMPLE: usize = 4;

/// Whether the point `(u, v)` (object-local, radius 1, y down) is inside the shape.
fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Circle => u * u + v * v <= 1.0,
        Shape::Square => u.abs() <= 0.82 && v.abs() <= 0.82,
        Shape::Triangle => {
            // Apex at the top, base at the bottom.
            let (top, bottom, half_base) = (-0.92, 0.78, 0.98);
            v >= top && v <= bottom && u.abs() <= half_base * (v - top) / (bottom - top)
        }
        Shape::Diamond => u.abs() + v.abs() <= 1.0,
        Shape::Ring => {
            let r2 = u * u + v * v;
            (0.33..=1.0).contains(&r2)
        }
        Shape::Cross => {
            let (arm, half) = (0.95, 0.32);
            (u.abs() <= half && v.abs() <= arm) || (v.abs() <= half && u.abs() <= arm)
        }
        Shape::Star => inside_star(u, v),
        Shape::Heart => {
            // (x² + y² − 1)³ − x² y³ ≤ 0, y up; scaled and shifted to fill the unit disc.
            let x = u * 1.15;
            let y = -v * 1.15 + 0.15;
            let a = x * x + y * y - 1.0;
            a * a * a - x * x * y * y * y <= 0.0
        }
    }
}

/// The star's 10 polygon vertices (outer radius 1, inner 0.45, first point up), computed once.
fn star_vertices() -> &'static [(f32, f32); 10] {
    static VERTICES: std::sync::OnceLock<[(f32, f32); 10]> = std::sync::OnceLock::new();
    VERTICES.get_or_init(|| {
        let mut v = [(0f32, 0f32); 10];
        for (i, slot) in v.iter_mut().enumerate() {
            let r = if i % 2 == 0 { 1.0f32 } else { 0.45 };
            let angle = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
            *slot = (r * angle.cos(), r * angle.sin());
        }
        v
    })
}

/// Five-pointed star, one point up: inside the 10-vertex polygon (even-odd rule).
fn inside_star(u: f32, v: f32) -> bool {
    let vertices = star_vertices();
    let mut inside = false;
    let n = vertices.len();
    for i in 0..n {
        let (xi, yi) = vertices[i];
        let (xj, yj) = vertices[(i + n - 1) % n];
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

/// Coverage in [0, 1] of every pixel by the object.
fn coverage(object: &Object, side_px: usize) -> Vec<f32> {
    let side = side_px as f32;
    let (cx, cy) = (object.centre_frac.0 * side, object.centre_frac.1 * side);
    let r = (object.radius_frac * side).max(0.5);
    let mut out = vec![0f32; side_px * side_px];
    let step = 1.0 / SUPERSAMPLE as f32;
    let per_pixel = (SUPERSAMPLE * SUPERSAMPLE) as f32;
    // Only pixels near the object can be covered.
    let lo = |c: f32| ((c - r - 1.0).floor().max(0.0)) as usize;
    let hi = |c: f32| ((c + r + 1.0).ceil().min(side)) as usize;
    for py in lo(cy)..hi(cy) {
        for px in lo(cx)..hi(cx) {
            let mut hits = 0u32;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let x = px as f32 + (sx as f32 + 0.5) * step;
                    let y = py as f32 + (sy as f32 + 0.5) * step;
                    if inside(object.shape, (x - cx) / r, (y - cy) / r) {
                        hits += 1;
                    }
                }
            }
            if let Some(c) = out.get_mut(py * side_px + px) {
                *c = hits as f32 / per_pixel;
            }
        }
    }
    out
}

pub(crate) fn render(scene: &Scene, side_px: usize) -> Rendered {
    let n = side_px * side_px;
    let bg = scene.background.rgb();
    let mut composite: Vec<f32> = (0..n).flat_map(|_| bg.map(f32::from)).collect();
    let mut layers = Vec::with_capacity(1 + scene.objects.len());
    layers.push((0..n).flat_map(|_| [bg[0], bg[1], bg[2], 255]).collect());
    for object in &scene.objects {
        let cov = coverage(object, side_px);
        let rgb = object.colour.rgb();
        let mut layer = Vec::with_capacity(n * 4);
        for (i, &a) in cov.iter().enumerate() {
            layer.extend_from_slice(&[rgb[0], rgb[1], rgb[2], (a * 255.0).round() as u8]);
            for (ch, &value) in rgb.iter().enumerate() {
                if let Some(p) = composite.get_mut(i * 3 + ch) {
                    *p = *p * (1.0 - a) + f32::from(value) * a;
                }
            }
        }
        layers.push(layer);
    }
    Rendered {
        side_px,
        rgb: composite
            .into_iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
        layers,
    }
}
