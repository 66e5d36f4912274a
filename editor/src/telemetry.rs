//! Host telemetry on its own thread: GPU stats from NVML when an NVIDIA driver is present
//! (otherwise the reason it is not), CPU and RAM from sysinfo always. It samples at 10 Hz while
//! a run is in flight and every 3 s otherwise, and wakes the UI only when a number it shows
//! changed, so an idle editor does not redraw ten times a second.
//!
//! NVML is initialised once; a missing driver is a normal state, shown to the user, not an
//! error. Every GPU field is optional because cards differ in what they report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

/// Time between polls while a run is in flight: 10 Hz.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time between polls otherwise.
const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// One GPU's numbers; `None` where the card does not report a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuStats {
    /// Device name.
    pub name: String,
    /// Memory in use, bytes.
    pub vram_used_bytes: Option<u64>,
    /// Memory in all, bytes.
    pub vram_total_bytes: Option<u64>,
    /// GPU utilisation, percent.
    pub utilization_percent: Option<u32>,
    /// Core temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power draw, milliwatts.
    pub power_mw: Option<u32>,
}

/// The latest sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// GPU stats, or why there are none.
    pub gpu: Result<GpuStats, String>,
    /// Whole-machine CPU use, percent.
    pub cpu_percent: f32,
    /// Host memory in use, bytes.
    pub ram_used_bytes: u64,
    /// Host memory in all, bytes.
    pub ram_total_bytes: u64,
    /// Samples taken so far (the panel shows it is alive).
    pub samples: u64,
}

impl GpuStats {
    /// "VRAM 5.0 / 16.0 GiB", when the card reports both.
    pub fn vram_line(&self) -> Option<String> {
        let (used, total) = (self.vram_used_bytes?, self.vram_total_bytes?);
        Some(format!(
            "VRAM {:.1} / {:.1} GiB",
            used as f64 / GIB,
            total as f64 / GIB
        ))
    }

    /// "util 3 % · 40 °C · 20 W", with the fields the card reports.
    pub fn state_line(&self) -> String {
        let mut line = Vec::new();
        if let Some(u) = self.utilization_percent {
            line.push(format!("util {u} %"));
        }
        if let Some(t) = self.temperature_c {
            line.push(format!("{t} °C"));
        }
        if let Some(p) = self.power_mw {
            line.push(format!("{:.0} W", f64::from(p) / 1000.0));
        }
        line.join(" · ")
    }
}

impl Telemetry {
    /// "CPU 3 % · RAM 8.0 / 32.0 GiB".
    pub fn host_line(&self) -> String {
        format!(
            "CPU {:.0} % · RAM {:.1} / {:.1} GiB",
            self.cpu_percent,
            self.ram_used_bytes as f64 / GIB,
            self.ram_total_bytes as f64 / GIB
        )
    }

    /// The text the panel shows for this sample, so that a sample which would draw the same
    /// panel does not wake the UI.
    pub fn shown(&self) -> Vec<String> {
        let mut shown = vec![self.host_line()];
        match &self.gpu {
            Ok(gpu) => {
                shown.push(gpu.name.clone());
                shown.extend(gpu.vram_line());
                shown.push(gpu.state_line());
            }
            Err(reason) => shown.push(reason.clone()),
        }
        shown
    }
}

const GIB: f64 = (1u64 << 30) as f64;

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            gpu: Err("no sample yet".to_owned()),
            cpu_percent: 0.0,
            ram_used_bytes: 0,
            ram_total_bytes: 0,
            samples: 0,
        }
    }
}

/// The polling thread; stops when dropped.
pub struct TelemetryThread {
    latest: Arc<Mutex<Telemetry>>,
    stop: Arc<AtomicBool>,
    fast: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl TelemetryThread {
    /// Starts polling; `wake` is called after each sample (the UI repaints the panel).
    pub fn start(wake: Arc<dyn Fn() + Send + Sync>) -> TelemetryThread {
        let latest = Arc::new(Mutex::new(Telemetry {
            gpu: Err("starting…".to_owned()),
            ..Telemetry::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let fast = Arc::new(AtomicBool::new(false));
        let worker = {
            let latest = latest.clone();
            let stop = stop.clone();
            let fast = fast.clone();
            std::thread::Builder::new()
                .name("veetance-telemetry".to_owned())
                .spawn(move || poll_loop(&latest, &stop, &fast, wake.as_ref()))
                .ok()
        };
        if worker.is_none()
            && let Ok(mut latest) = latest.lock()
        {
            latest.gpu = Err("cannot start the telemetry thread".to_owned());
        }
        TelemetryThread {
            latest,
            stop,
            fast,
            worker,
        }
    }

    /// Samples at 10 Hz (`true`, while a run is in flight) or every 3 s.
    pub fn set_fast(&self, fast: bool) {
        self.fast.store(fast, Ordering::Relaxed);
    }

    /// The latest sample.
    pub fn latest(&self) -> Telemetry {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TelemetryThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn poll_loop(
    latest: &Mutex<Telemetry>,
    stop: &AtomicBool,
    fast: &AtomicBool,
    wake: &(dyn Fn() + Send + Sync),
) {
    let nvml = Nvml::init().map_err(|err| format!("no NVIDIA GPU telemetry: {err}"));
    let mut system = sysinfo::System::new().ok();
    let mut samples = 0;
    while !stop.load(Ordering::Relaxed) {
        samples += 1;
        let gpu = match &nvml {
            Ok(nvml) => gpu_stats(nvml),
            Err(reason) => Err(reason.clone()),
        };
        let (cpu_percent, ram_used_bytes, ram_total_bytes) = match system.as_mut() {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory();
                (
                    system.global_cpu_usage(),
                    system.used_memory(),
                    system.total_memory(),
                )
            }
            None => (0.0, 0, 0),
        };
        let sample = Telemetry {
            gpu,
            cpu_percent,
            ram_used_bytes,
            ram_total_bytes,
            samples,
        };
        let changed = {
            let mut latest = latest.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = latest.shown() != sample.shown();
            *latest = sample;
            changed
        };
        if changed {
            wake();
        }
        // Short sleeps, so that a stop (the editor closing) or a run starting is seen quickly.
        let sampled = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let interval = if fast.load(Ordering::Relaxed) {
                POLL_INTERVAL
            } else {
                IDLE_POLL_INTERVAL
            };
            let Some(left) = interval.checked_sub(sampled.elapsed()) else {
                break;
            };
            std::thread::sleep(left.min(POLL_INTERVAL));
        }
    }
}

fn gpu_stats(nvml: &Nvml) -> Result<GpuStats, String> {
    let device = nvml
        .device_by_index(0)
        .map_err(|err| format!("NVML found no usable GPU: {err}"))?;
    let memory = device.memory_info().ok();
    Ok(GpuStats {
        name: device.name().unwrap_or_else(|_| "NVIDIA GPU".to_owned()),
        vram_used_bytes: memory.as_ref().map(|m| m.used),
        vram_total_bytes: memory.as_ref().map(|m| m.total),
        utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
        temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
        power_mw: device.power_usage().ok(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_sample_that_draws_the_same_panel_does_not_count_as_a_change() {
        let sample = Telemetry {
            gpu: Ok(GpuStats {
                name: "card".to_owned(),
                vram_used_bytes: Some(5 << 30),
                vram_total_bytes: Some(16 << 30),
                utilization_percent: Some(0),
                temperature_c: Some(40),
                power_mw: Some(20_000),
            }),
            cpu_percent: 3.2,
            ram_used_bytes: 8 << 30,
            ram_total_bytes: 32 << 30,
            samples: 1,
        };
        let mut same = sample.clone();
        same.samples = 2;
        same.cpu_percent = 3.4;
        same.ram_used_bytes += 1 << 20;
        if let Ok(gpu) = &mut same.gpu {
            gpu.power_mw = Some(20_200);
        }
        assert_eq!(sample.shown(), same.shown());
        let mut changed = sample.clone();
        changed.cpu_percent = 4.0;
        assert_ne!(sample.shown(), changed.shown());
        let mut changed = sample.clone();
        if let Ok(gpu) = &mut changed.gpu {
            gpu.vram_used_bytes = Some(6 << 30);
        }
        assert_ne!(sample.shown(), changed.shown());
    }

    #[test]
    fn samples_host_memory_and_explains_a_missing_gpu() {
        let thread = TelemetryThread::start(Arc::new(|| {}));
        let start = std::time::Instant::now();
        while thread.latest().samples < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "no samples");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sample = thread.latest();
        assert!(sample.ram_total_bytes > 0);
        assert!(sample.ram_used_bytes <= sample.ram_total_bytes);
        match sample.gpu {
            Ok(gpu) => assert!(!gpu.name.is_empty()),
            // Without a driver the reason is shown, not a blank panel.
            Err(reason) => assert!(
                reason.contains("NVIDIA") || reason.contains("NVML"),
                "{reason}"
            ),
        }
    }
}
