//! Mutation fuzzing of the parsers that read outside data, on stable Rust (no nightly, so no
//! `cargo fuzz`): each [`Target`] takes bytes; [`run`] mutates a committed corpus (`corpus/<target>/`)
//! with byte-level and splicing mutations from a seeded generator, runs the target under
//! `catch_unwind`, and reports every panic with the input that caused it (written to
//! `crashes/<target>/`) and the slowest input seen.
//!
//! A target passes when it returns (with a value or an error) for every input; errors are the
//! expected outcome for most mutated inputs. `veetance-fuzz --help` runs them; CI runs each for a
//! bounded number of cases (`fuzz/tests/smoke.rs`); docs/TESTING.md has the long runs.

#![forbid(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod targets;

pub use targets::Target;

/// Largest input a mutation may grow to (parsers have their own limits far above this; large
/// inputs only slow the search down).
const MAX_INPUT_BYTES: usize = 1 << 20;

/// What a fuzzing run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run.
    pub cases: u64,
    /// Inputs that panicked, saved where they were written (or would have been).
    pub crashes: Vec<PathBuf>,
    /// The longest a single input took.
    pub slowest: Duration,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

/// Runs `target` on `cases` inputs, seeded by `seed`: first its corpus as it is
/// (`fuzz/corpus/<target>/` and the repository files it names, under the repository `root`),
/// then mutations of it; panicking inputs are saved under `crash_dir`.
pub fn run(
    target: Target,
    root: &Path,
    crash_dir: &Path,
    cases: u64,
    seed: u64,
) -> anyhow::Result<Report> {
    let mut corpus = load_corpus(&root.join("fuzz/corpus").join(target.name()))?;
    for file in target.seed_files() {
        let path = root.join(file);
        corpus.push(
            std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("reading the seed {}: {e}", path.display()))?,
        );
    }
    anyhow::ensure!(!corpus.is_empty(), "no corpus for {}", target.name());
    let scratch = tempfile::tempdir()?;
    let mut state = target.prepare()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = Report::default();
    let started = Instant::now();
    // Panics are expected to be caught here; the default hook would print each one. The
    // message and location are kept instead, and saved beside the input that caused them.
    let trace = std::env::var_os("VEETANCE_FUZZ_TRACE").is_some();
    let hook = std::panic::take_hook();
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut message) = sink.lock() {
            *message = info.to_string();
        }
    }));
    for case in 0..cases {
        let input = if case < corpus.len() as u64 {
            corpus.get(case as usize).cloned().unwrap_or_default()
        } else {
            mutate(&corpus, &mut rng)
        };
        if trace {
            // An input that kills the process (out of memory, stack overflow) cannot be caught;
            // with VEETANCE_FUZZ_TRACE set, the input being run is always on disk.
            std::fs::create_dir_all(crash_dir.join(target.name()))?;
            std::fs::write(crash_dir.join(target.name()).join("last-input"), &input)?;
        }
        let one = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            target.run(&mut state, &input, scratch.path())
        }));
        report.slowest = report.slowest.max(one.elapsed());
        report.cases += 1;
        if outcome.is_err() {
            let path = crash_dir
                .join(target.name())
                .join(format!("crash-{seed}-{case}"));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &input)?;
            let message = last_panic.lock().map(|m| m.clone()).unwrap_or_default();
            std::fs::write(path.with_extension("txt"), &message)?;
            report.crashes.push(path);
        }
    }
    std::panic::set_hook(hook);
    report.elapsed = started.elapsed();
    Ok(report)
}

fn load_corpus(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading the corpus {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    Ok(entries
        .iter()
        .map(std::fs::read)
        .collect::<Result<Vec<_>, _>>()?)
}

/// One corpus entry with one to eight mutations: bit flips, interesting bytes, insertions,
/// deletions, duplicated ranges, ASCII digits (numbers in text formats), and splices with another
/// entry.
fn mutate(corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let pick = |rng: &mut ChaCha8Rng| {
        corpus
            .get(rng.random_range(0..corpus.len()))
            .cloned()
            .unwrap_or_default()
    };
    let mut data = pick(rng);
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                if let Some(b) = data.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                const INTERESTING: [u8; 10] =
                    [0, 1, 0x7f, 0x80, 0xff, b'"', b'(', b')', b'\\', b'\n'];
                if let Some(b) = data.get_mut(i) {
                    *b = INTERESTING[rng.random_range(0..INTERESTING.len())];
                }
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                data.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(256));
                let copy: Vec<u8> = data.get(i..i + n).map(<[u8]>::to_vec).unwrap_or_default();
                let at = rng.random_range(0..=len);
                data.splice(at..at, copy);
            }
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let digits = [
                    "0",
                    "-1",
                    "9999999999",
                    "1e308",
                    "NaN",
                    "18446744073709551615",
                ];
                let d = digits[rng.random_range(0..digits.len())]
                    .as_bytes()
                    .to_vec();
                let end = (i + rng.random_range(0..4)).min(len);
                data.splice(i..end, d);
            }
            6 => {
                let other = pick(rng);
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let at = rng.random_range(0..=len);
                    data.truncate(at);
                    data.extend_from_slice(other.get(from..).unwrap_or_default());
                }
            }
            _ => {
                // Little-endian integers where binary formats keep sizes and counts.
                if len >= 8 {
                    let i = rng.random_range(0..=len - 8);
                    let values = [0u64, 1, 255, 1 << 31, 1 << 40, u64::MAX, u64::MAX / 2];
                    let v = values[rng.random_range(0..values.len())].to_le_bytes();
                    if let Some(slot) = data.get_mut(i..i + 8) {
                        slot.copy_from_slice(&v);
                    }
                }
            }
        }
    }
    data.truncate(MAX_INPUT_BYTES);
    data
}
