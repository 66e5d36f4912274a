//! The loss log: appended every step, saved as `loss.csv` and drawn as `loss.png`.
//!
//! The plot has one panel per phase (VAE reconstruction on top, flow matching below), the
//! x axis is the step and the y axis log10(loss) between the panel's own minimum and maximum,
//! both raw (light) and smoothed over 50 steps (dark). There is no text in the image (no font is
//! bundled); the CSV holds the numbers.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::TrainError;

/// One logged step.
#[derive(Debug, Clone, PartialEq)]
pub struct LossRow {
    /// "vae" or "dit".
    pub phase: String,
    /// Step number (1-based) within the phase.
    pub step: usize,
    /// Loss value.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// All logged steps.
#[derive(Debug, Clone, Default)]
pub struct LossLog {
    rows: Vec<LossRow>,
}

const PANEL_W_PX: u32 = 800;
const PANEL_H_PX: u32 = 240;
const MARGIN_PX: u32 = 10;

impl LossLog {
    /// Appends a step (replacing later rows of the same phase left over from an interrupted run).
    pub fn push(&mut self, phase: &str, step: usize, loss: f64, lr: f64) {
        self.rows.retain(|r| !(r.phase == phase && r.step >= step));
        self.rows.push(LossRow {
            phase: phase.to_string(),
            step,
            loss,
            lr,
        });
    }

    /// The rows.
    pub fn rows(&self) -> &[LossRow] {
        &self.rows
    }

    /// Reads `loss.csv` from `dir`; empty if absent or unreadable (a fresh curve is harmless).
    pub fn load(dir: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(dir.join("loss.csv")) else {
            return Self::default();
        };
        let rows = text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split(',');
                Some(LossRow {
                    phase: f.next()?.to_string(),
                    step: f.next()?.parse().ok()?,
                    loss: f.next()?.parse().ok()?,
                    lr: f.next()?.parse().ok()?,
                })
            })
            .collect();
        Self { rows }
    }

    /// Writes `loss.csv` and `loss.png` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let mut csv = String::from("phase,step,loss,lr\n");
        for r in &self.rows {
            csv.push_str(&format!("{},{},{},{}\n", r.phase, r.step, r.loss, r.lr));
        }
        let path = dir.join("loss.csv");
        std::fs::write(&path, csv).map_err(|e| TrainError::io(&path, e))?;
        let png = dir.join("loss.png");
        self.plot()
            .save(&png)
            .map_err(|e| TrainError::Image(format!("{}: {e}", png.display())))
    }

    /// Draws the curve.
    pub fn plot(&self) -> RgbImage {
        let phases = ["vae", "dit"];
        let mut img = RgbImage::from_pixel(
            PANEL_W_PX,
            PANEL_H_PX * phases.len() as u32,
            Rgb([255, 255, 255]),
        );
        for (p, phase) in phases.iter().enumerate() {
            let values: Vec<(usize, f64)> = self
                .rows
                .iter()
                .filter(|r| r.phase == *phase && r.loss > 0.0 && r.loss.is_finite())
                .map(|r| (r.step, r.loss.log10()))
                .collect();
            let top = p as u32 * PANEL_H_PX;
            // Panel frame.
            for x in 0..PANEL_W_PX {
                img.put_pixel(x, top + PANEL_H_PX - 1, Rgb([180, 180, 180]));
            }
            if values.len() < 2 {
                continue;
            }
            let max_step = values.iter().map(|v| v.0).max().unwrap_or(1).max(1) as f64;
            let lo = values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
            let hi = values.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
            let span = (hi - lo).max(1e-6);
            let w = f64::from(PANEL_W_PX - 2 * MARGIN_PX);
            let h = f64::from(PANEL_H_PX - 2 * MARGIN_PX);
            let to_px = |step: f64, y: f64| -> (u32, u32) {
                let x = MARGIN_PX as f64 + step / max_step * w;
                let y = top as f64 + MARGIN_PX as f64 + (hi - y) / span * h;
                (x.round() as u32, y.round() as u32)
            };
            let smooth: Vec<f64> = (0..values.len())
                .map(|i| {
                    let from = i.saturating_sub(49);
                    let window = &values[from..=i];
                    window.iter().map(|v| v.1).sum::<f64>() / window.len() as f64
                })
                .collect();
            for (i, &(step, y)) in values.iter().enumerate() {
                let (x, yp) = to_px(step as f64, y);
                if x < PANEL_W_PX && yp < img.height() {
                    img.put_pixel(x, yp, Rgb([170, 200, 240]));
                }
                let (x, ys) = to_px(step as f64, smooth[i]);
                if x < PANEL_W_PX && ys < img.height() {
                    img.put_pixel(x, ys, Rgb([20, 60, 160]));
                }
            }
        }
        img
    }
}
