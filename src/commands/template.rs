//! Chat templates in a child process: a checkpoint's template is code from a download, and
//! minijinja's fuel bounds its instructions but not what one instruction allocates (string
//! concatenation that doubles, filters over huge lazy sequences). The binary therefore renders
//! every template in a copy of itself (`veetance __render-template`, hidden) limited to
//! [`CHILD_MEMORY_BYTES`] of heap and [`CHILD_CPU_S`] of CPU, and kills it after
//! [`CHILD_WALL_S`]; a template past a limit becomes an error naming it, not a dead process.
//!
//! The child sets its own limits before it reads the job, so the parent spawns it without a
//! `pre_exec` hook: that keeps `Command::spawn` on `posix_spawn` (a vfork that shares the
//! parent's memory) instead of `fork`. A fork copies at once every page the CUDA driver has
//! pinned for DMA (Linux does not share pinned pages copy-on-write), which took 6–13 s per
//! prompt with a streamed model's 14–30 GB of page-locked weights, and it left the parent's
//! CUDA context invalid in one run.

use std::io::{Read as _, Write as _};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use veetance_nodes::ChatTemplateJob;

/// Heap a template's child may use.
const CHILD_MEMORY_BYTES: u64 = 2 << 30;
/// CPU seconds a template's child may use.
const CHILD_CPU_S: u64 = 10;
/// Wall-clock seconds before the child is killed.
const CHILD_WALL_S: u64 = 20;
/// The most a child may write back (its own output bound is 1 MiB plus four times the
/// messages; this is far above that).
const CHILD_OUTPUT_BYTES: u64 = 256 << 20;

/// The child side: a job as JSON on standard input, `{"prompt": ...}` or `{"error": ...}` on
/// standard output.
pub fn child() -> Result<ExitCode> {
    limit_self()?;
    let mut input = String::new();
    std::io::stdin()
        .take(CHILD_OUTPUT_BYTES)
        .read_to_string(&mut input)
        .context("reading the template job")?;
    let job: ChatTemplateJob = serde_json::from_str(&input).context("parsing the template job")?;
    let reply = match job.render_here() {
        Ok(prompt) => serde_json::json!({ "prompt": prompt }),
        Err(err) => serde_json::json!({ "error": err.to_string() }),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{reply}").context("writing the rendered template")?;
    Ok(ExitCode::SUCCESS)
}

/// The parent side, installed for the whole process by `main`. Falls back to rendering here
/// when no child can be started (the binary was deleted, say).
pub fn render_in_child(job: &ChatTemplateJob) -> Result<String, String> {
    match spawn_and_wait(job) {
        Ok(reply) => reply,
        Err(SpawnError::Unavailable) => job.render_here().map_err(|err| err.to_string()),
        Err(SpawnError::Failed(reason)) => Err(reason),
    }
}

enum SpawnError {
    /// No child could be started.
    Unavailable,
    /// The child ran and did not reply.
    Failed(String),
}

fn limits_reason() -> String {
    format!(
        "the chat template exceeded its limits ({} MiB of memory, {CHILD_CPU_S} s of CPU, \
         {CHILD_WALL_S} s) while rendering the prompt; a chat template writes a prompt, not more \
         (this checkpoint's template is probably hostile or broken)",
        CHILD_MEMORY_BYTES >> 20
    )
}

fn spawn_and_wait(job: &ChatTemplateJob) -> Result<Result<String, String>, SpawnError> {
    let exe = std::env::current_exe().map_err(|_| SpawnError::Unavailable)?;
    let mut command = Command::new(exe);
    command
        .arg("__render-template")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().map_err(|_| SpawnError::Unavailable)?;
    let input = serde_json::to_vec(job).map_err(|e| SpawnError::Failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A child that died before reading shows up in its status below.
        let _ = stdin.write_all(&input);
    }
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| SpawnError::Failed("no pipe from the template's process".into()))?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = (&mut stdout)
            .take(CHILD_OUTPUT_BYTES)
            .read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + Duration::from_secs(CHILD_WALL_S);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(SpawnError::Failed(e.to_string())),
        }
    };
    let bytes = reader.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        _ => return Ok(Err(limits_reason())),
    }
    let reply: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| SpawnError::Failed(format!("the template's process replied badly: {e}")))?;
    Ok(match (reply.get("prompt"), reply.get("error")) {
        (Some(serde_json::Value::String(prompt)), _) => Ok(prompt.clone()),
        (_, Some(serde_json::Value::String(error))) => Err(error.clone()),
        _ => Err("the template's process replied badly".to_owned()),
    })
}

/// Limits this process (the child) to [`CHILD_MEMORY_BYTES`] of heap and [`CHILD_CPU_S`] of
/// CPU, before it reads anything it was sent.
#[cfg(unix)]
fn limit_self() -> Result<()> {
    for (resource, value) in [
        (libc::RLIMIT_DATA, CHILD_MEMORY_BYTES),
        (libc::RLIMIT_CPU, CHILD_CPU_S),
    ] {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct it is given, which lives across the call.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            anyhow::bail!(
                "reading the template's process limits: {}",
                std::io::Error::last_os_error()
            );
        }
        // A limit may only be lowered: keep a stricter one the user already set.
        let value = (value as libc::rlim_t).min(current.rlim_max);
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit only reads the struct, which lives across the call.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            anyhow::bail!(
                "limiting the template's process: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn limit_self() -> Result<()> {
    Ok(())
}
