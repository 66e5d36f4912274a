//! LayerSplit: one picture into a background plus object layers whose composite is the picture.
//!
//! The split works in five steps, each a plain function below:
//!
//! 1. **Colour clusters.** Pixels are clustered in OKLab (a perceptual colour space: equal
//!    distances look about equally different) with weighted k-means over a 32k-bin colour
//!    histogram. Initialisation is greedy k-means++ without randomness: the heaviest colour first,
//!    then always the colour with the largest weight × squared distance to the chosen centres, and
//!    no new centre once every colour is close to one. So the result is deterministic and a
//!    two-colour picture gets two clusters however many layers are asked for.
//! 2. **Regions.** Connected components (4-connectivity) of pixels that share a cluster, or
//!    that sit on flat ground with no edge between them: k-means cuts a smooth gradient into
//!    bands, and the flat-ground rule joins the bands back into one surface, while outlines,
//!    even blurred ones, stay cuts. The components form a region adjacency graph. Regions that
//!    are tiny or thin (mostly boundary, such as the one-pixel ring of antialiased pixels around
//!    a shape) merge into their most similar neighbour; then the smallest merge on until at most
//!    `MAX_REGIONS` remain.
//! 3. **Background.** The region touching the image border most is the background.
//! 4. **Layers.** The other regions are grouped into `n_layers - 1` object layers by Ward's
//!    agglomerative criterion (cheapest merge = small and similar), where merging into the
//!    background is one of the options. Same-coloured objects thus share a layer only when there
//!    are fewer layers than objects. Larger groups go lower in the stack. If the picture has fewer
//!    regions than layers were asked for, the top layers are left empty rather than inventing
//!    splits.
//! 5. **Soft edges.** Antialiased edges are mixtures of an object and what is behind it, and
//!    a hard label would leave a fringe of mixed colour on one layer or the other. Within
//!    `EDGE_BAND_RADIUS_PX` of a label boundary, the background colour behind the object `B`
//!    comes from a smooth (pull-push) fill of the sure background pixels, which is also what
//!    the background layer shows under the objects, and the object colour `K` from the nearest
//!    sure object pixels; the pixel's coverage is its projection on the segment from `B` to `K`.
//!
//! **Why the composite is exact.** The background layer is opaque. It holds the picture where no
//! object owns the pixel, and the extrapolated background `B` (rounded to 8 bits) under object
//! pixels. Every pixel is owned by at most one object layer, so alpha-over at a pixel is
//! `F·a + B·(1 - a)` with one `(F, a)`. `unmix` picks the 8-bit alpha first (at least the
//! coverage estimate, and at least the smallest alpha for which an in-gamut `F` exists) and then
//! `F = B + (I - B) / a` rounded, so `F·a + B·(1 - a)` is within `a/2 ≤ 1/2` level of the
//! picture `I`, which rounds back to `I`. Interior pixels get `a = 1, F = I`. The tests check
//! this on antialiased shapes, gradients and noise.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use image::{RgbImage, Rgba, RgbaImage};

use crate::pixels::Layers;
use crate::{ImagingError, Result};

/// Most layers LayerSplit makes; the node's input range is `2..=MAX_LAYERS`.
pub const MAX_LAYERS: usize = 8;
/// Fewest layers: a background and one object layer.
pub const MIN_LAYERS: usize = 2;

/// Colour histogram resolution: 5 bits per sRGB channel. Colours within 8 levels share a bin,
/// far below what k-means needs to tell apart, and the histogram stays at 32k entries.
const HISTOGRAM_BITS: u32 = 5;
/// No new cluster centre once every colour is this close (OKLab distance) to one; about twice
/// OKLab's just-noticeable difference.
const MIN_CLUSTER_SEPARATION: f32 = 0.04;
/// Colour clusters beyond the layer count, so that antialiased mixtures and minor colours get
/// clusters of their own instead of dragging the main colours' centres towards them.
const EXTRA_CLUSTERS: usize = 2;
/// Lloyd iterations cap; on a histogram this converges in a handful.
const MAX_KMEANS_ITERATIONS: usize = 20;
/// Regions smaller than this fraction of the picture are merged into a neighbour.
const MIN_REGION_FRACTION: f64 = 1.0 / 400.0;
/// Absolute floor of the region size, for tiny pictures.
const MIN_REGION_PX: u64 = 6;
/// Adjacent pixels whose colour steps (see `Grid::pair_step` and `Grid::edge_magnitude`) are
/// below this belong to one surface even when k-means put them in different clusters: that is
/// a gradient or noise, not an outline. Pixel noise of a few levels plus a steep gradient gives
/// about 0.03; an outline between clearly different colours, even blurred over five pixels,
/// gives 0.1 and more.
const WEAK_EDGE_STEP: f32 = 0.06;
/// The grouping step is cubic in the region count, so regions are merged down to this first.
const MAX_REGIONS: usize = 64;
/// Pixels this close (Chebyshev) to a layer boundary get a soft coverage instead of a hard one.
/// Two pixels covers a box-filtered antialiased edge and most of a VAE's softer ones.
const EDGE_BAND_RADIUS_PX: usize = 2;
/// Edge pixels whose colour lies less than this many levels from the background towards the
/// object stay on the background: so small a shift is indistinguishable from pixel noise, its
/// un-premultiplied colour would be mostly noise, and leaving the pixel on the opaque background
/// is exact too. Measured in levels, not alpha, so that faint antialiasing next to a strong
/// outline still goes to the object.
const MIN_EDGE_SHIFT_LEVELS: f32 = 4.0;
/// Below this squared sRGB distance between object and background colour, coverage cannot be
/// measured, so edge pixels keep their hard label.
const MIN_CONTRAST_SQ: f32 = 6.0 * 6.0;

/// About the most memory [`layer_split`] needs for a `width_px` × `height_px` picture (an
/// estimate for refusing pictures that would exhaust memory): the RGBA layers it returns, and
/// per pixel its colour, region and ownership tables. Calibrated on a 2048² picture split in 3
/// layers and written as PSD: 364 MB peak resident for the whole `veetance run`, 87 bytes per
/// pixel.
pub fn layer_split_working_bytes(width_px: u32, height_px: u32, n_layers: usize) -> u64 {
    const TABLE_BYTES_PER_PIXEL: u64 = 76;
    u64::from(width_px) * u64::from(height_px) * (4 * n_layers as u64 + TABLE_BYTES_PER_PIXEL)
}

/// Splits `image` into `n_layers` (2..=8) RGBA layers, background first, whose alpha-over
/// composite reproduces `image` within 1/255 per channel (in practice exactly).
///
/// Deterministic: the same picture and count always give the same layers.
pub fn layer_split(image: &RgbImage, n_layers: usize) -> Result<Layers> {
    if !(MIN_LAYERS..=MAX_LAYERS).contains(&n_layers) {
        return Err(ImagingError::LayerCountOutOfRange { n_layers });
    }
    let (width_px, height_px) = image.dimensions();
    if width_px == 0 || height_px == 0 {
        return Err(ImagingError::EmptyImage {
            width_px,
            height_px,
        });
    }
    let grid = Grid {
        width: width_px as usize,
        height: height_px as usize,
    };
    let srgb: Vec<[u8; 3]> = image.pixels().map(|pixel| pixel.0).collect();
    let lab = oklab_pixels(&srgb)?;

    let cluster_of_pixel = cluster_colours(&srgb, &lab, n_layers + EXTRA_CLUSTERS)?;
    let (region_of_pixel, mut graph) = build_regions(&grid, &cluster_of_pixel, &lab)?;
    let min_area_px = ((grid.len() as f64 * MIN_REGION_FRACTION) as u64).max(MIN_REGION_PX);
    graph.merge_while(|region, _| region.is_insignificant(min_area_px))?;
    graph.merge_while(|_, n_alive| n_alive > MAX_REGIONS)?;
    let owner = assign_layers(&graph, &region_of_pixel, n_layers - 1)?;
    let n_objects = owner.iter().copied().max().unwrap_or(0);
    build_layers(&grid, &srgb, &owner, n_objects, n_layers)
}

/// Row-major pixel indexing with bounds-checked neighbourhoods.
#[derive(Clone, Copy)]
struct Grid {
    width: usize,
    height: usize,
}

impl Grid {
    fn len(&self) -> usize {
        self.width * self.height
    }

    /// Indices of the pixels within Chebyshev distance `radius` of `idx`, itself excluded.
    fn neighbours(&self, idx: usize, radius: usize) -> impl Iterator<Item = usize> + use<> {
        let (width, height) = (self.width, self.height);
        let (x, y) = (idx % width, idx / width);
        let (x_lo, x_hi) = (x.saturating_sub(radius), (x + radius).min(width - 1));
        let (y_lo, y_hi) = (y.saturating_sub(radius), (y + radius).min(height - 1));
        (y_lo..=y_hi)
            .flat_map(move |ny| (x_lo..=x_hi).map(move |nx| ny * width + nx))
            .filter(move |&n_idx| n_idx != idx)
    }

    /// The right and lower neighbours, so that each 4-adjacent pair is visited once.
    fn forward_neighbours(&self, idx: usize) -> impl Iterator<Item = usize> + use<> {
        let (x, y) = (idx % self.width, idx / self.width);
        let right = (x + 1 < self.width).then_some(idx + 1);
        let down = (y + 1 < self.height).then_some(idx + self.width);
        right.into_iter().chain(down)
    }

    /// Colour step (OKLab distance) across two 4-adjacent pixels, measured between the pixels
    /// one further out on either side (three pixels apart): a blurred outline changes colour over
    /// a few pixels, so a one-pixel step would look as weak as a gradient's.
    fn pair_step(&self, lab: &[[f32; 3]], a_idx: usize, b_idx: usize) -> Result<f32, OutOfRange> {
        let (before, after) = self.widen_pair(a_idx.min(b_idx), a_idx.max(b_idx));
        let (before, after) = (
            lookup(lab, before, "OKLab pixels")?,
            lookup(lab, after, "OKLab pixels")?,
        );
        Ok(distance_sq(before, after).sqrt())
    }

    /// Largest colour change (OKLab distance) across the pixel, horizontally or vertically,
    /// between its neighbours on either side (clamped to the image).
    fn edge_magnitude(&self, lab: &[[f32; 3]], idx: usize) -> Result<f32, OutOfRange> {
        let (x, y) = (idx % self.width, idx / self.width);
        let left = if x > 0 { idx - 1 } else { idx };
        let right = if x + 1 < self.width { idx + 1 } else { idx };
        let up = if y > 0 { idx - self.width } else { idx };
        let down = if y + 1 < self.height {
            idx + self.width
        } else {
            idx
        };
        let texel = |idx| lookup(lab, idx, "OKLab pixels");
        let horizontal = distance_sq(texel(left)?, texel(right)?);
        let vertical = distance_sq(texel(up)?, texel(down)?);
        Ok(horizontal.max(vertical).sqrt())
    }

    /// For the 4-adjacent pair `idx` → `next_idx` (right or down), the pixels one step further
    /// out on each side, `(before idx, after next_idx)`, clamped to the image.
    fn widen_pair(&self, idx: usize, next_idx: usize) -> (usize, usize) {
        let (x, y) = (idx % self.width, idx / self.width);
        if next_idx == idx + 1 {
            let before = if x > 0 { idx - 1 } else { idx };
            let after = if x + 2 < self.width {
                next_idx + 1
            } else {
                next_idx
            };
            (before, after)
        } else {
            let before = if y > 0 { idx - self.width } else { idx };
            let after = if y + 2 < self.height {
                next_idx + self.width
            } else {
                next_idx
            };
            (before, after)
        }
    }

    fn neighbours4(&self, idx: usize) -> impl Iterator<Item = usize> + use<> {
        let (x, y) = (idx % self.width, idx / self.width);
        let left = (x > 0).then(|| idx - 1);
        let right = (x + 1 < self.width).then_some(idx + 1);
        let up = (y > 0).then(|| idx - self.width);
        let down = (y + 1 < self.height).then_some(idx + self.width);
        [left, right, up, down].into_iter().flatten()
    }

    fn is_on_border(&self, idx: usize) -> bool {
        let (x, y) = (idx % self.width, idx / self.width);
        x == 0 || y == 0 || x + 1 == self.width || y + 1 == self.height
    }
}

// Checked access to the per-pixel and per-region tables. Every index in this module comes from
// the grid, the histogram or the region graph, so a miss is a bug here; it must come out as an
// error naming the table, never as a default value read or a write dropped, which would turn the
// bug into a layer that silently differs from the picture.

/// A lookup outside a table. Small and `Copy`, unlike [`ImagingError`], because the hot
/// per-neighbour loops pass it around; `?` turns it into the crate's error at step boundaries.
#[derive(Clone, Copy, Debug)]
struct OutOfRange {
    what: &'static str,
    idx: usize,
    len: usize,
}

impl From<OutOfRange> for ImagingError {
    fn from(OutOfRange { what, idx, len }: OutOfRange) -> Self {
        ImagingError::SplitIndexOutOfRange { what, idx, len }
    }
}

/// `values[idx]`, or an error naming the table.
#[inline]
fn lookup<T: Copy>(values: &[T], idx: usize, what: &'static str) -> Result<T, OutOfRange> {
    lookup_ref(values, idx, what).copied()
}

/// `&values[idx]`, or an error naming the table.
#[inline]
fn lookup_ref<'a, T>(values: &'a [T], idx: usize, what: &'static str) -> Result<&'a T, OutOfRange> {
    let len = values.len();
    values.get(idx).ok_or(OutOfRange { what, idx, len })
}

/// `&mut values[idx]`, or an error naming the table.
#[inline]
fn lookup_mut<'a, T>(
    values: &'a mut [T],
    idx: usize,
    what: &'static str,
) -> Result<&'a mut T, OutOfRange> {
    let len = values.len();
    values.get_mut(idx).ok_or(OutOfRange { what, idx, len })
}

/// Checks that a table has the length the code indexes and zips it with: besides the lookups,
/// `zip` would stop at the shorter of two tables without a word.
fn check_len<T>(values: &[T], expected: usize, what: &'static str) -> Result<()> {
    if values.len() == expected {
        Ok(())
    } else {
        Err(ImagingError::SplitSizeMismatch {
            what,
            len: values.len(),
            expected,
        })
    }
}

/// `Iterator::any` with a fallible predicate: stops at the first `true` or the first error.
#[inline]
fn try_any<I: Iterator>(
    mut items: I,
    mut predicate: impl FnMut(I::Item) -> Result<bool, OutOfRange>,
) -> Result<bool, OutOfRange> {
    // `find_map` walks the iterator internally (`try_fold`), which for the flattened
    // neighbourhood iterators is much faster than a `for` loop calling `next`.
    items
        .find_map(|item| match predicate(item) {
            Ok(false) => None,
            hit_or_error => Some(hit_or_error),
        })
        .unwrap_or(Ok(false))
}

// ---------------------------------------------------------------------------------------------
// Step 1: colour clusters.

fn oklab_pixels(srgb: &[[u8; 3]]) -> Result<Vec<[f32; 3]>, OutOfRange> {
    let linear_from_srgb: Vec<f32> = (0..=255_u8)
        .map(|level| {
            let c = f32::from(level) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        })
        .collect();
    let linear = |level: u8| lookup(&linear_from_srgb, level.into(), "sRGB-to-linear table");
    srgb.iter()
        .map(|&[r, g, b]| {
            let (r, g, b) = (linear(r)?, linear(g)?, linear(b)?);
            // Björn Ottosson's OKLab matrices.
            let l = (0.412_221_46 * r + 0.536_332_55 * g + 0.051_445_995 * b).cbrt();
            let m = (0.211_903_5 * r + 0.680_699_5 * g + 0.107_396_96 * b).cbrt();
            let s = (0.088_302_46 * r + 0.281_718_85 * g + 0.629_978_7 * b).cbrt();
            Ok([
                0.210_454_26 * l + 0.793_617_8 * m - 0.004_072_047 * s,
                1.977_998_5 * l - 2.428_592_2 * m + 0.450_593_7 * s,
                0.025_904_037 * l + 0.782_771_77 * m - 0.808_675_77 * s,
            ])
        })
        .collect()
}

fn distance_sq(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn histogram_bin([r, g, b]: [u8; 3]) -> usize {
    let shift = 8 - HISTOGRAM_BITS;
    (usize::from(r >> shift) << (2 * HISTOGRAM_BITS))
        | (usize::from(g >> shift) << HISTOGRAM_BITS)
        | usize::from(b >> shift)
}

/// Weighted k-means over the colour histogram; returns each pixel's cluster index.
fn cluster_colours(srgb: &[[u8; 3]], lab: &[[f32; 3]], max_clusters: usize) -> Result<Vec<u8>> {
    check_len(lab, srgb.len(), "OKLab pixels")?;
    let n_bins = 1 << (3 * HISTOGRAM_BITS);
    let mut bin_weight = vec![0_u32; n_bins];
    let mut bin_sum = vec![[0.0_f64; 3]; n_bins];
    for (&colour, &colour_lab) in srgb.iter().zip(lab) {
        let bin = histogram_bin(colour);
        *lookup_mut(&mut bin_weight, bin, "colour histogram")? += 1;
        let sum = lookup_mut(&mut bin_sum, bin, "colour histogram")?;
        for (acc, value) in sum.iter_mut().zip(colour_lab) {
            *acc += f64::from(value);
        }
    }
    // (weight, mean colour) of every bin, `None` for an empty one.
    let bins: Vec<Option<(f32, [f32; 3])>> = bin_weight
        .iter()
        .zip(&bin_sum)
        .map(|(&weight, sum)| {
            (weight > 0).then(|| {
                let mean = sum.map(|acc| (acc / f64::from(weight)) as f32);
                (weight as f32, mean)
            })
        })
        .collect();
    // The occupied bins, in bin order.
    let points: Vec<(f32, [f32; 3])> = bins.iter().flatten().copied().collect();

    let centres = kmeans(&points, max_clusters)?;
    let cluster_of_bin: Vec<u8> = bins
        .iter()
        .map(|bin| bin.map_or(0, |(_, colour)| nearest(&centres, colour) as u8))
        .collect();
    Ok(srgb
        .iter()
        .map(|&colour| lookup(&cluster_of_bin, histogram_bin(colour), "cluster table"))
        .collect::<Result<_, _>>()?)
}

fn nearest(centres: &[[f32; 3]], colour: [f32; 3]) -> usize {
    let mut best = (0, f32::INFINITY);
    for (idx, &centre) in centres.iter().enumerate() {
        let dist_sq = distance_sq(centre, colour);
        if dist_sq < best.1 {
            best = (idx, dist_sq);
        }
    }
    best.0
}

/// Greedy k-means++ initialisation, then Lloyd iterations. Ties go to the lower index.
fn kmeans(points: &[(f32, [f32; 3])], max_clusters: usize) -> Result<Vec<[f32; 3]>> {
    let mut centres: Vec<[f32; 3]> = Vec::new();
    let heaviest = points.iter().fold(
        None::<(f32, [f32; 3])>,
        |best, &(weight, colour)| match best {
            Some((best_weight, _)) if best_weight >= weight => best,
            _ => Some((weight, colour)),
        },
    );
    let Some((_, first)) = heaviest else {
        return Ok(centres);
    };
    centres.push(first);
    let mut dist_sq: Vec<f32> = points.iter().map(|p| distance_sq(p.1, first)).collect();
    while centres.len() < max_clusters {
        let max_dist_sq = dist_sq.iter().copied().fold(0.0_f32, f32::max);
        if max_dist_sq < MIN_CLUSTER_SEPARATION * MIN_CLUSTER_SEPARATION {
            break;
        }
        let mut best = (None, 0.0_f32);
        for (point, &point_dist_sq) in points.iter().zip(&dist_sq) {
            let score = point.0 * point_dist_sq;
            if score > best.1 {
                best = (Some(point.1), score);
            }
        }
        let Some(centre) = best.0 else { break };
        centres.push(centre);
        for (point, point_dist_sq) in points.iter().zip(dist_sq.iter_mut()) {
            *point_dist_sq = point_dist_sq.min(distance_sq(point.1, centre));
        }
    }

    let mut assignment: Vec<usize> = vec![usize::MAX; points.len()];
    for _ in 0..MAX_KMEANS_ITERATIONS {
        let mut changed = false;
        for (point, slot) in points.iter().zip(assignment.iter_mut()) {
            let cluster = nearest(&centres, point.1);
            changed |= *slot != cluster;
            *slot = cluster;
        }
        if !changed {
            break;
        }
        let mut sums = vec![([0.0_f64; 3], 0.0_f64); centres.len()];
        for (point, &cluster) in points.iter().zip(&assignment) {
            let (sum, weight) = lookup_mut(&mut sums, cluster, "cluster sums")?;
            for (acc, value) in sum.iter_mut().zip(point.1) {
                *acc += f64::from(point.0) * f64::from(value);
            }
            *weight += f64::from(point.0);
        }
        for (centre, (sum, weight)) in centres.iter_mut().zip(sums) {
            // An emptied cluster keeps its centre; it simply owns no colour.
            if weight > 0.0 {
                *centre = sum.map(|acc| (acc / weight) as f32);
            }
        }
    }
    Ok(centres)
}

// ---------------------------------------------------------------------------------------------
// Step 2: regions and their adjacency graph.

#[derive(Clone, Debug, Default)]
struct Region {
    alive: bool,
    area_px: u64,
    lab_sum: [f64; 3],
    /// Pixels on the image border.
    border_px: u64,
    /// Pixels whose four neighbours are all in the region; grows approximately on merges.
    interior_px: u64,
    /// Neighbour region → the border they share.
    neighbours: BTreeMap<usize, Border>,
}

/// The border between a region and a neighbour: how many 4-adjacent pixel pairs it has.
#[derive(Clone, Copy, Debug, Default)]
struct Border {
    n_pairs: u64,
}

impl Border {
    fn add(&mut self, other: Border) {
        self.n_pairs += other.n_pairs;
    }
}

impl Region {
    fn mean_lab(&self) -> [f32; 3] {
        let area = self.area_px.max(1) as f64;
        self.lab_sum.map(|sum| (sum / area) as f32)
    }

    /// Too small to be an object, or so thin that it is mostly boundary (an antialiased fringe).
    fn is_insignificant(&self, min_area_px: u64) -> bool {
        self.area_px < min_area_px || self.interior_px * 4 < self.area_px
    }
}

struct RegionGraph {
    regions: Vec<Region>,
    /// Where each original region went; follow until a root.
    merged_into: Vec<usize>,
    n_alive: usize,
}

fn build_regions(
    grid: &Grid,
    cluster_of_pixel: &[u8],
    lab: &[[f32; 3]],
) -> Result<(Vec<usize>, RegionGraph)> {
    check_len(cluster_of_pixel, grid.len(), "cluster map")?;
    check_len(lab, grid.len(), "OKLab pixels")?;
    let flat: Vec<bool> = (0..grid.len())
        .map(|idx| Ok(grid.edge_magnitude(lab, idx)? < WEAK_EDGE_STEP))
        .collect::<Result<_, OutOfRange>>()?;
    let mut region_of_pixel = vec![usize::MAX; grid.len()];
    let mut regions: Vec<Region> = Vec::new();
    let mut stack = Vec::new();
    // The flood fill labels pixels ahead of the seed, so the seed loop indexes the region map
    // rather than iterating over it.
    for seed in 0..grid.len() {
        let seed_region = lookup_mut(&mut region_of_pixel, seed, "region map")?;
        if *seed_region != usize::MAX {
            continue;
        }
        let region_idx = regions.len();
        let mut region = Region {
            alive: true,
            ..Region::default()
        };
        *seed_region = region_idx;
        stack.push(seed);
        while let Some(idx) = stack.pop() {
            region.area_px += 1;
            for (acc, value) in region
                .lab_sum
                .iter_mut()
                .zip(lookup(lab, idx, "OKLab pixels")?)
            {
                *acc += f64::from(value);
            }
            region.border_px += u64::from(grid.is_on_border(idx));
            let cluster = lookup(cluster_of_pixel, idx, "cluster map")?;
            for n_idx in grid.neighbours4(idx) {
                // Same colour cluster, or no edge at or between the two pixels: k-means cuts
                // smooth gradients into bands, and this joins the bands back into one surface.
                // Both pixels must be flat in every direction, not only along the pair: two
                // pixels side by side along an outline differ little but sit on an edge.
                let joined = lookup(cluster_of_pixel, n_idx, "cluster map")? == cluster
                    || (lookup(&flat, idx, "flatness map")?
                        && lookup(&flat, n_idx, "flatness map")?
                        && grid.pair_step(lab, idx, n_idx)? < WEAK_EDGE_STEP);
                if !joined {
                    continue;
                }
                let n_region = lookup_mut(&mut region_of_pixel, n_idx, "region map")?;
                if *n_region == usize::MAX {
                    *n_region = region_idx;
                    stack.push(n_idx);
                }
            }
        }
        regions.push(region);
    }
    for (idx, &region_idx) in region_of_pixel.iter().enumerate() {
        let any_other = try_any(grid.neighbours4(idx), |n_idx| {
            Ok(lookup(&region_of_pixel, n_idx, "region map")? != region_idx)
        })?;
        if !any_other {
            lookup_mut(&mut regions, region_idx, "regions")?.interior_px += 1;
        }
    }
    let mut shared: HashMap<(usize, usize), Border> = HashMap::new();
    for (idx, &region_a) in region_of_pixel.iter().enumerate() {
        for n_idx in grid.forward_neighbours(idx) {
            let region_b = lookup(&region_of_pixel, n_idx, "region map")?;
            if region_a != region_b {
                let key = (region_a.min(region_b), region_a.max(region_b));
                shared.entry(key).or_default().add(Border { n_pairs: 1 });
            }
        }
    }
    // The HashMap's order does not matter: each entry goes to its own two keys of BTreeMaps.
    for ((region_a, region_b), border) in shared {
        lookup_mut(&mut regions, region_a, "regions")?
            .neighbours
            .insert(region_b, border);
        lookup_mut(&mut regions, region_b, "regions")?
            .neighbours
            .insert(region_a, border);
    }
    let n_alive = regions.len();
    let merged_into = (0..regions.len()).collect();
    Ok((
        region_of_pixel,
        RegionGraph {
            regions,
            merged_into,
            n_alive,
        },
    ))
}

impl RegionGraph {
    fn root(&self, mut region_idx: usize) -> Result<usize, OutOfRange> {
        // Merges always go into a live region, so chains are short; the bound guards a cycle.
        for _ in 0..self.merged_into.len() {
            let next = lookup(&self.merged_into, region_idx, "merge table")?;
            if next == region_idx {
                break;
            }
            region_idx = next;
        }
        Ok(region_idx)
    }

    /// Repeatedly merges the smallest live region for which `should_merge` holds into its most
    /// similar neighbour, until none is left (or it has no neighbour).
    fn merge_while(&mut self, should_merge: impl Fn(&Region, usize) -> bool) -> Result<()> {
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, region)| region.alive)
            .map(|(idx, region)| Reverse((region.area_px, idx)))
            .collect();
        while let Some(Reverse((area_px, region_idx))) = heap.pop() {
            let region = lookup_ref(&self.regions, region_idx, "regions")?;
            // Skip entries made stale by an earlier merge.
            if !region.alive || region.area_px != area_px || !should_merge(region, self.n_alive) {
                continue;
            }
            let Some(target_idx) = self.most_similar_neighbour(region_idx)? else {
                continue;
            };
            self.merge(region_idx, target_idx)?;
            let target = lookup_ref(&self.regions, target_idx, "regions")?;
            heap.push(Reverse((target.area_px, target_idx)));
        }
        Ok(())
    }

    /// The neighbour to merge `region_idx` into, or `None` if it has no neighbour.
    fn most_similar_neighbour(&self, region_idx: usize) -> Result<Option<usize>> {
        let region = lookup_ref(&self.regions, region_idx, "regions")?;
        let colour = region.mean_lab();
        let mut best: Option<(f32, Reverse<u64>, usize)> = None;
        for (&neighbour_idx, border) in &region.neighbours {
            let neighbour = lookup_ref(&self.regions, neighbour_idx, "regions")?;
            let colour_distance_sq = distance_sq(colour, neighbour.mean_lab());
            let key = (colour_distance_sq, Reverse(border.n_pairs), neighbour_idx);
            if best.is_none_or(|best| key < best) {
                best = Some(key);
            }
        }
        Ok(best.map(|(_, _, idx)| idx))
    }

    /// Merges `source` into `target`; returns the regions whose border with `target` changed.
    fn merge(&mut self, source_idx: usize, target_idx: usize) -> Result<Vec<usize>> {
        let source = std::mem::take(lookup_mut(&mut self.regions, source_idx, "regions")?);
        let shared_pairs = source
            .neighbours
            .get(&target_idx)
            .map_or(0, |border| border.n_pairs);
        let changed: Vec<usize> = source
            .neighbours
            .keys()
            .copied()
            .filter(|&idx| idx != target_idx)
            .collect();
        for (&neighbour_idx, &border) in &source.neighbours {
            if neighbour_idx == target_idx {
                continue;
            }
            let neighbour = lookup_mut(&mut self.regions, neighbour_idx, "regions")?;
            neighbour.neighbours.remove(&source_idx);
            neighbour
                .neighbours
                .entry(target_idx)
                .or_default()
                .add(border);
        }
        let target = lookup_mut(&mut self.regions, target_idx, "regions")?;
        target.area_px += source.area_px;
        for (acc, value) in target.lab_sum.iter_mut().zip(source.lab_sum) {
            *acc += value;
        }
        target.border_px += source.border_px;
        // Pixels along the former shared boundary become (roughly) interior.
        target.interior_px += source.interior_px + shared_pairs;
        target.neighbours.remove(&source_idx);
        for (neighbour_idx, border) in source.neighbours {
            if neighbour_idx != target_idx {
                target
                    .neighbours
                    .entry(neighbour_idx)
                    .or_default()
                    .add(border);
            }
        }
        *lookup_mut(&mut self.merged_into, source_idx, "merge table")? = target_idx;
        self.n_alive -= 1;
        Ok(changed)
    }
}

// ---------------------------------------------------------------------------------------------
// Steps 3 and 4: background and layer groups.

struct Group {
    regions: Vec<usize>,
    area_px: u64,
    lab_sum: [f64; 3],
}

impl Group {
    fn mean_lab(&self) -> [f32; 3] {
        let area = self.area_px.max(1) as f64;
        self.lab_sum.map(|sum| (sum / area) as f32)
    }

    /// Ward's criterion: the increase in total squared error if the two groups were one.
    fn ward_cost(&self, other: &Group) -> f64 {
        let (n_a, n_b) = (self.area_px as f64, other.area_px as f64);
        n_a * n_b / (n_a + n_b).max(1.0) * f64::from(distance_sq(self.mean_lab(), other.mean_lab()))
    }

    fn absorb(&mut self, other: Group) {
        self.regions.extend(other.regions);
        self.area_px += other.area_px;
        for (acc, value) in self.lab_sum.iter_mut().zip(other.lab_sum) {
            *acc += value;
        }
    }
}

/// Returns each pixel's owner: 0 for the background, 1..=n for object layers, bottom to top.
fn assign_layers(
    graph: &RegionGraph,
    region_of_pixel: &[usize],
    max_objects: usize,
) -> Result<Vec<u8>> {
    let live: Vec<(usize, &Region)> = graph
        .regions
        .iter()
        .enumerate()
        .filter(|(_, region)| region.alive)
        .collect();
    // Most border contact, then largest, then lowest index.
    let background_idx = live
        .iter()
        .max_by_key(|(idx, region)| (region.border_px, region.area_px, Reverse(*idx)))
        .map(|(idx, _)| *idx)
        .unwrap_or(0);
    let group_of = |(idx, region): &(usize, &Region)| Group {
        regions: vec![*idx],
        area_px: region.area_px,
        lab_sum: region.lab_sum,
    };
    let mut background = live
        .iter()
        .find(|(idx, _)| *idx == background_idx)
        .map(group_of)
        .unwrap_or(Group {
            regions: Vec::new(),
            area_px: 0,
            lab_sum: [0.0; 3],
        });
    let mut objects: Vec<Group> = live
        .iter()
        .filter(|(idx, _)| *idx != background_idx)
        .map(group_of)
        .collect();

    while objects.len() > max_objects {
        // (cost, a, b): b == None merges a into the background.
        let mut best: Option<(f64, usize, Option<usize>)> = None;
        for (a_idx, a) in objects.iter().enumerate() {
            let mut consider = |cost: f64, b_idx: Option<usize>| {
                if best.is_none_or(|(best_cost, _, _)| cost < best_cost) {
                    best = Some((cost, a_idx, b_idx));
                }
            };
            consider(a.ward_cost(&background), None);
            for (b_idx, b) in objects.iter().enumerate().skip(a_idx + 1) {
                consider(a.ward_cost(b), Some(b_idx));
            }
        }
        let Some((_, a_idx, b_idx)) = best else { break };
        match b_idx {
            None => {
                let group = objects.remove(a_idx);
                background.absorb(group);
            }
            Some(b_idx) => {
                let group = objects.remove(b_idx);
                lookup_mut(&mut objects, a_idx, "object groups")?.absorb(group);
            }
        }
    }
    // Bigger groups lower: an object enclosed by another is smaller and ends up above it.
    objects.sort_by_key(|group| (Reverse(group.area_px), group.regions.iter().min().copied()));

    let mut owner_of_region = vec![0_u8; graph.regions.len()];
    for (layer_idx, group) in objects.iter().enumerate() {
        for &region_idx in &group.regions {
            *lookup_mut(&mut owner_of_region, region_idx, "layer table")? = (layer_idx + 1) as u8;
        }
    }
    Ok(region_of_pixel
        .iter()
        .map(|&region_idx| lookup(&owner_of_region, graph.root(region_idx)?, "layer table"))
        .collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------------------
// Step 5: soft edges and the layer images.

/// What the layer images need to know about one pixel, gathered so that drawing walks the
/// pixels in step with the layer images instead of indexing half a dozen tables.
#[derive(Clone, Copy)]
struct EdgePixel {
    /// The picture's colour.
    picture: [u8; 3],
    /// The extrapolated background behind it.
    behind: [u8; 3],
    /// The hard label: 0 for the background, else the object layer.
    owner: u8,
    /// Within `EDGE_BAND_RADIUS_PX` of a label boundary.
    in_band: bool,
    /// The only object layer that may draw this pixel (0 for none).
    candidate: u8,
}

fn build_layers(
    grid: &Grid,
    srgb: &[[u8; 3]],
    owner: &[u8],
    n_objects: u8,
    n_layers: usize,
) -> Result<Layers> {
    let n_pixels = grid.len();
    check_len(srgb, n_pixels, "sRGB pixels")?;
    check_len(owner, n_pixels, "owner map")?;
    // Pixels next to a different owner, then grown to the band radius.
    let on_boundary: Vec<bool> = owner
        .iter()
        .enumerate()
        .map(|(idx, &pixel_owner)| {
            try_any(grid.neighbours(idx, 1), |n_idx| {
                Ok(lookup(owner, n_idx, "owner map")? != pixel_owner)
            })
        })
        .collect::<Result<_, OutOfRange>>()?;
    let in_band: Vec<bool> = on_boundary
        .iter()
        .enumerate()
        .map(|(idx, &boundary)| {
            Ok(boundary
                || try_any(grid.neighbours(idx, EDGE_BAND_RADIUS_PX - 1), |n_idx| {
                    lookup(&on_boundary, n_idx, "boundary map")
                })?)
        })
        .collect::<Result<_, OutOfRange>>()?;
    let colours: Vec<[f32; 3]> = srgb.iter().map(|c| c.map(f32::from)).collect();

    // The background behind everything, extrapolated from sure background pixels.
    // Pull-push rather than nearest-neighbour filling, because this is what a user sees after
    // moving an object away: it should be a smooth continuation, not streaks.
    let mut known: Vec<bool> = owner
        .iter()
        .zip(&in_band)
        .map(|(&pixel_owner, &band)| pixel_owner == 0 && !band)
        .collect();
    if !known.contains(&true) {
        // A background so thin that all of it is edge band: use all of it.
        known = owner.iter().map(|&layer| layer == 0).collect();
    }
    let behind: Vec<[u8; 3]> = pull_push_fill(grid, &colours, &known)?
        .iter()
        .map(|value| value.map(round_level))
        .collect();
    check_len(&behind, n_pixels, "background fill")?;

    // Which object a background-owned edge pixel might partly belong to: the most frequent
    // object owner nearby, ties to the lower layer.
    let candidate: Vec<u8> = owner
        .iter()
        .zip(&in_band)
        .enumerate()
        .map(|(idx, (&pixel_owner, &band))| {
            if pixel_owner != 0 || !band {
                return Ok(pixel_owner);
            }
            let mut counts = [0_u32; MAX_LAYERS];
            for n_idx in grid.neighbours(idx, EDGE_BAND_RADIUS_PX) {
                let layer = lookup(owner, n_idx, "owner map")?;
                *lookup_mut(&mut counts, usize::from(layer), "layer counts")? += 1;
            }
            let best = counts
                .iter()
                .enumerate()
                .skip(1)
                .max_by_key(|(i, c)| (**c, Reverse(*i)));
            Ok(match best {
                Some((layer, &count)) if count > 0 => layer as u8,
                _ => 0,
            })
        })
        .collect::<Result<_, OutOfRange>>()?;
    let pixels: Vec<EdgePixel> = srgb
        .iter()
        .zip(&behind)
        .zip(owner)
        .zip(&in_band)
        .zip(&candidate)
        .map(
            |((((&picture, &behind), &owner), &in_band), &candidate)| EdgePixel {
                picture,
                behind,
                owner,
                in_band,
                candidate,
            },
        )
        .collect();

    // Final (colour, alpha) per object layer, and the background layer.
    let mut background = RgbaImage::new(grid.width as u32, grid.height as u32);
    let mut objects: Vec<RgbaImage> = (0..n_objects)
        .map(|_| RgbaImage::new(grid.width as u32, grid.height as u32))
        .collect();
    let mut owned_colour_sums = vec![([0_u64; 3], 0_u64); usize::from(n_objects)];
    for (layer, (object, (sum, count))) in
        (1..=n_objects).zip(objects.iter_mut().zip(&mut owned_colour_sums))
    {
        let is_seed: Vec<bool> = pixels.iter().map(|pixel| pixel.owner == layer).collect();
        let domain: Vec<bool> = pixels
            .iter()
            .map(|pixel| pixel.candidate == layer)
            .collect();
        let object_colour = propagate(grid, &colours, &in_band, &is_seed, &domain)?;
        check_len(&object_colour, n_pixels, "object colour fill")?;
        let targets = object.pixels_mut().zip(background.pixels_mut());
        for ((pixel, object_rgb), (object_px, background_px)) in
            pixels.iter().zip(object_colour).zip(targets)
        {
            if pixel.candidate != layer {
                continue;
            }
            let hard_label = if pixel.owner == layer { 1.0 } else { 0.0 };
            let (estimate, shift_levels) = if pixel.in_band {
                coverage(pixel.picture, pixel.behind, object_rgb)
                    .map_or((hard_label, f32::INFINITY), |cover| {
                        (cover.fraction, cover.fraction * cover.contrast_levels)
                    })
            } else {
                (1.0, f32::INFINITY)
            };
            if estimate <= 0.0 || shift_levels < MIN_EDGE_SHIFT_LEVELS {
                continue;
            }
            let (colour, alpha) = unmix(pixel.picture, pixel.behind, estimate);
            *object_px = Rgba([colour[0], colour[1], colour[2], alpha]);
            let [r, g, b] = pixel.behind;
            *background_px = Rgba([r, g, b, 255]);
            for (acc, level) in sum.iter_mut().zip(pixel.picture) {
                *acc += u64::from(level);
            }
            *count += 1;
        }
    }
    // Every pixel no object took shows the picture itself on the opaque background.
    let mut taken = vec![false; n_pixels];
    for object in &objects {
        for (is_taken, pixel) in taken.iter_mut().zip(object.pixels()) {
            *is_taken |= pixel.0[3] > 0;
        }
    }
    for ((background_px, &[r, g, b]), &is_taken) in background.pixels_mut().zip(srgb).zip(&taken) {
        if !is_taken {
            *background_px = Rgba([r, g, b, 255]);
        }
    }

    let mut layers = Layers::new(grid.width as u32, grid.height as u32);
    layers.push("background", background)?;
    for (layer_idx, (object, (sum, count))) in
        objects.into_iter().zip(owned_colour_sums).enumerate()
    {
        let mean = sum.map(|acc| (acc / count.max(1)) as u8);
        let name = format!(
            "region {} #{:02x}{:02x}{:02x}",
            layer_idx + 1,
            mean[0],
            mean[1],
            mean[2]
        );
        layers.push(name, object)?;
    }
    for layer_idx in layers.len()..n_layers {
        layers.push(
            format!("empty {layer_idx}"),
            RgbaImage::new(grid.width as u32, grid.height as u32),
        )?;
    }
    Ok(layers)
}

fn round_level(value: f32) -> u8 {
    value.round().clamp(0.0, 255.0) as u8
}

/// Fills the pixels not `known` with a smooth interpolation of the known ones (the pull-push
/// scheme of Gortler et al., "The Lumigraph", 1996): average down an image pyramid, weighting
/// by how much of each cell is known, then come back up, filling each level's gaps from the
/// bilinearly sampled coarser level. Known pixels keep their colours exactly. Linear time.
fn pull_push_fill(grid: &Grid, colours: &[[f32; 3]], known: &[bool]) -> Result<Vec<[f32; 3]>> {
    check_len(colours, grid.len(), "pixel colours")?;
    check_len(known, grid.len(), "known-background map")?;
    struct Level {
        width: usize,
        height: usize,
        colours: Vec<[f32; 3]>,
        /// How much of the cell is known, in [0, 1].
        weights: Vec<f32>,
    }
    let base_weights: Vec<f32> = known
        .iter()
        .map(|&is_known| f32::from(u8::from(is_known)))
        .collect();
    let mut levels = vec![Level {
        width: grid.width,
        height: grid.height,
        colours: colours.to_vec(),
        weights: base_weights,
    }];
    // Pull: average 2x2 blocks, weighted by knownness, down to one pixel.
    while let Some(fine) = levels
        .last()
        .filter(|level| level.width > 1 || level.height > 1)
    {
        let (width, height) = (fine.width.div_ceil(2), fine.height.div_ceil(2));
        let mut colours = Vec::with_capacity(width * height);
        let mut weights = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let mut sum = [0.0_f32; 3];
                let mut weight_sum = 0.0;
                for (fine_x, fine_y) in [
                    (2 * x, 2 * y),
                    (2 * x + 1, 2 * y),
                    (2 * x, 2 * y + 1),
                    (2 * x + 1, 2 * y + 1),
                ] {
                    if fine_x >= fine.width || fine_y >= fine.height {
                        continue;
                    }
                    let fine_idx = fine_y * fine.width + fine_x;
                    let weight = lookup(&fine.weights, fine_idx, "pyramid weights")?;
                    let colour = lookup(&fine.colours, fine_idx, "pyramid colours")?;
                    for (acc, channel) in sum.iter_mut().zip(colour) {
                        *acc += weight * channel;
                    }
                    weight_sum += weight;
                }
                // A cell with nothing known under it stays black at weight 0: the push below
                // replaces it entirely with the coarser level.
                colours.push(if weight_sum > 0.0 {
                    sum.map(|acc| acc / weight_sum)
                } else {
                    [0.0; 3]
                });
                weights.push(weight_sum.min(1.0));
            }
        }
        levels.push(Level {
            width,
            height,
            colours,
            weights,
        });
    }
    // Push: from the coarsest level down, blend each cell with the coarser level in proportion
    // to how unknown it is. After this every level is complete (weight 1 everywhere).
    // Popping the pyramid walks it from coarse to fine; the last level popped is the picture's.
    let Some(mut coarse) = levels.pop() else {
        return Ok(colours.to_vec());
    };
    while let Some(mut fine) = levels.pop() {
        for (idx, (colour, weight)) in fine.colours.iter_mut().zip(&mut fine.weights).enumerate() {
            if *weight < 1.0 {
                let (x, y) = ((idx % fine.width) as f32, (idx / fine.width) as f32);
                // Cell centres: fine pixel x sits at coarse coordinate (x + 0.5) / 2 - 0.5.
                let from_coarse =
                    sample_bilinear(&coarse, (x + 0.5) / 2.0 - 0.5, (y + 0.5) / 2.0 - 0.5)?;
                for (channel, coarse_channel) in colour.iter_mut().zip(from_coarse) {
                    *channel = *weight * *channel + (1.0 - *weight) * coarse_channel;
                }
                *weight = 1.0;
            }
        }
        coarse = fine;
    }

    fn sample_bilinear(level: &Level, x: f32, y: f32) -> Result<[f32; 3], OutOfRange> {
        let x = x.clamp(0.0, (level.width - 1) as f32);
        let y = y.clamp(0.0, (level.height - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = (
            (x0 + 1).min(level.width - 1),
            (y0 + 1).min(level.height - 1),
        );
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let texel =
            |tx: usize, ty: usize| lookup(&level.colours, ty * level.width + tx, "pyramid colours");
        let (c00, c10, c01, c11) = (
            texel(x0, y0)?,
            texel(x1, y0)?,
            texel(x0, y1)?,
            texel(x1, y1)?,
        );
        let mut sample = [0.0_f32; 3];
        for ((((channel, c00), c10), c01), c11) in
            sample.iter_mut().zip(c00).zip(c10).zip(c01).zip(c11)
        {
            let top = c00 * (1.0 - fx) + c10 * fx;
            let bottom = c01 * (1.0 - fx) + c11 * fx;
            *channel = top * (1.0 - fy) + bottom * fy;
        }
        Ok(sample)
    }

    Ok(coarse.colours)
}

/// Fills colours outward from seed pixels (those not in the band for which `is_seed` holds, or
/// all of them if none is), breadth first: each new pixel takes the mean of its already-filled
/// 8-neighbours. Only pixels in `domain` are filled. `in_band`, `is_seed` and `domain` are
/// per-pixel masks. Deterministic, since a pixel only reads pixels filled in earlier rounds.
fn propagate(
    grid: &Grid,
    colours: &[[f32; 3]],
    in_band: &[bool],
    is_seed: &[bool],
    domain: &[bool],
) -> Result<Vec<Option<[f32; 3]>>> {
    check_len(colours, grid.len(), "pixel colours")?;
    check_len(in_band, grid.len(), "edge-band map")?;
    check_len(is_seed, grid.len(), "seed map")?;
    check_len(domain, grid.len(), "fill domain")?;
    let mut seeds: Vec<bool> = is_seed
        .iter()
        .zip(in_band)
        .map(|(&seed, &band)| seed && !band)
        .collect();
    if !seeds.contains(&true) {
        // A thin object or background has no pixel clear of the edge band: use all of it.
        seeds = is_seed.to_vec();
    }
    let mut filled: Vec<Option<[f32; 3]>> = colours
        .iter()
        .zip(&seeds)
        .map(|(&colour, &seed)| seed.then_some(colour))
        .collect();
    let mut frontier: Vec<usize> = seeds
        .iter()
        .enumerate()
        .filter(|(_, seed)| **seed)
        .map(|(idx, _)| idx)
        .collect();
    let mut queued = vec![false; grid.len()];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for &idx in &frontier {
            for n_idx in grid.neighbours(idx, 1) {
                if lookup(domain, n_idx, "fill domain")?
                    && lookup(&filled, n_idx, "fill")?.is_none()
                {
                    let is_queued = lookup_mut(&mut queued, n_idx, "fill queue")?;
                    if !*is_queued {
                        *is_queued = true;
                        next.push(n_idx);
                    }
                }
            }
        }
        let values: Vec<Option<[f32; 3]>> = next
            .iter()
            .map(|&idx| {
                let mut sum = [0.0_f32; 3];
                let mut n_known = 0_u32;
                for n_idx in grid.neighbours(idx, 1) {
                    if let Some(value) = lookup(&filled, n_idx, "fill")? {
                        for (acc, channel) in sum.iter_mut().zip(value) {
                            *acc += channel;
                        }
                        n_known += 1;
                    }
                }
                Ok((n_known > 0).then(|| sum.map(|acc| acc / n_known as f32)))
            })
            .collect::<Result<_, OutOfRange>>()?;
        for (&idx, value) in next.iter().zip(values) {
            *lookup_mut(&mut filled, idx, "fill")? = value;
        }
        frontier = next;
    }
    Ok(filled)
}

/// How much of an object covers a pixel, as far as its colour tells.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Coverage {
    /// In [0, 1].
    fraction: f32,
    /// Distance between object and background colour, in 8-bit levels.
    contrast_levels: f32,
}

/// Coverage of an object of colour `object` over `under` that explains `picture`: the
/// projection of `picture - under` on `object - under`, clamped to [0, 1]. `None` when the two
/// colours are too close to tell apart.
fn coverage(picture: [u8; 3], under: [u8; 3], object: Option<[f32; 3]>) -> Option<Coverage> {
    let object = object?;
    let mut dot = 0.0;
    let mut norm_sq = 0.0;
    for ((p, u), o) in picture.iter().zip(under).zip(object) {
        let towards_object = o - f32::from(u);
        dot += (f32::from(*p) - f32::from(u)) * towards_object;
        norm_sq += towards_object * towards_object;
    }
    (norm_sq >= MIN_CONTRAST_SQ).then(|| Coverage {
        fraction: (dot / norm_sq).clamp(0.0, 1.0),
        contrast_levels: norm_sq.sqrt(),
    })
}

/// Chooses the colour and 8-bit alpha of an upper-layer pixel so that alpha-over on `under`
/// reproduces `picture` to within half a level: alpha at least `estimate` and at least the
/// smallest alpha for which an in-gamut colour exists, then the colour solved for that alpha.
fn unmix(picture: [u8; 3], under: [u8; 3], estimate: f32) -> ([u8; 3], u8) {
    let mut min_alpha: u32 = 1;
    for (p, u) in picture.iter().zip(under) {
        let (p, u) = (u32::from(*p), u32::from(u));
        // Smallest a with u + (p - u) * 255 / a inside [0, 255], rounded up.
        let needed = if p > u {
            ((p - u) * 255).div_ceil(255 - u)
        } else if p < u {
            ((u - p) * 255).div_ceil(u)
        } else {
            0
        };
        min_alpha = min_alpha.max(needed);
    }
    let alpha = u32::from(round_level(estimate * 255.0))
        .max(min_alpha)
        .min(255);
    if alpha == 255 {
        return (picture, 255);
    }
    let mut colour = [0_u8; 3];
    for ((channel, p), u) in colour.iter_mut().zip(picture).zip(under) {
        let (p, u) = (f32::from(p), f32::from(u));
        *channel = round_level(u + (p - u) * 255.0 / alpha as f32);
    }
    (colour, alpha as u8)
}

#[cfg(test)]
mod tests;
