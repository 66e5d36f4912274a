//! `veetance run`: validate, apply overrides, run, report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use veetance_engine::overrides::apply_override;
use veetance_engine::{
    Budgets, CancelToken, EventSink, RunEnv, RunOptions, RunStatus, Session, SessionConfig,
    Workflow, validate,
};

use crate::cli::RunArgs;
use crate::commands::validate::print_diagnostics;
use crate::events::{JsonEvents, ProgressEvents, files_lines, summary_table};
use crate::input::{is_picture, read_workflow_source};

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    // Before anything else: a fully cached run would otherwise "succeed" on a device it
    // cannot use.
    if let Err(err) = veetance_nodes::check_build_supports(args.device.name()) {
        eprintln!("error: --device {}: {err}", args.device.name());
        return Ok(ExitCode::from(2));
    }
    let registry = Arc::new(veetance_nodes::registry()?);
    let cache_dir = if args.no_cache {
        None
    } else {
        Some(match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => dirs::cache_dir()
                .context("no user cache directory on this system; pass --cache-dir or --no-cache")?
                .join("veetance"),
        })
    };
    let session = Session::new(
        registry.clone(),
        &SessionConfig {
            memory_cache_bytes: if args.no_cache { 0 } else { 4 << 30 },
            disk_cache_dir: cache_dir,
            disk_cache_max_bytes: args.cache_max,
            workers: args.workers.max(1),
        },
    );
    let cancel = CancelToken::new();
    install_ctrl_c(&cancel);
    // Models stay loaded between the files of one run within the RAM budget (by default half of
    // the machine's memory), least recently used first out.
    let pool = Arc::new(veetance_engine::ModelPool::new(
        args.ram_budget
            .unwrap_or_else(veetance_engine::ModelPool::default_budget_bytes),
    ));
    // Resident layers placed on the GPU under the memory plan, shared by the files of the run
    // (the plan bounds them).
    let placed = Arc::new(veetance_engine::ModelPool::new(u64::MAX));

    // Validate every file before running any, so a typo in the last file does not waste the
    // time of the first.
    let mut prepared = Vec::new();
    let mut invalid = false;
    let mut shown_errors = std::collections::HashSet::new();
    for path in &args.files {
        match prepare(path, args, &registry) {
            Ok(Some(item)) => prepared.push(item),
            Ok(None) => invalid = true,
            Err(err) => {
                // Several files can fail for one reason (the words of an unquoted --set value).
                let message = format!("error: {err:#}");
                if shown_errors.insert(message.clone()) {
                    eprintln!("{message}");
                }
                invalid = true;
            }
        }
    }
    if invalid {
        return Ok(ExitCode::from(2));
    }

    let options = RunOptions {
        targets: None,
        budgets: Budgets {
            ram_bytes: args.ram_budget,
            vram_bytes: args.vram_budget,
        },
    };
    let mut failed = false;
    for (path, shown, workflow, graph, read_roots) in prepared {
        if cancel.is_cancelled() {
            break;
        }
        let env = RunEnv {
            out_dir: args.out.clone(),
            workflow_ron: Arc::from(workflow.to_ron()),
            device: args.device.name().to_owned(),
            model_dirs: super::models::model_dirs(&args.models_dirs),
            pool: pool.clone(),
            vram_budget_bytes: args.vram_budget,
            placed: placed.clone(),
            read_roots,
            workflow_dir: RunEnv::folder_of(&path),
        };
        let json_events = JsonEvents::new(&shown);
        let progress = ProgressEvents::new();
        let sink: &dyn EventSink = if args.json { &json_events } else { &progress };
        let report = match session.run(&graph, &env, &options, sink, &cancel) {
            Ok(report) => report,
            Err(err) => {
                eprintln!("error: {shown}: {err}");
                return Ok(ExitCode::from(2));
            }
        };
        let files = report.written_files();
        if args.json {
            json_events.files(&files);
        } else {
            if args.files.len() > 1 {
                outln!("{shown}:")?;
            }
            out!("{}", summary_table(&report))?;
            if let Some(plan) = progress.memory_plan() {
                for line in plan.describe() {
                    outln!("{line}")?;
                }
            }
            for line in files_lines(&files) {
                outln!("{line}")?;
            }
        }
        match report.status {
            RunStatus::Succeeded => {}
            RunStatus::Failed => {
                if let Some((node, error)) = report.failure() {
                    eprintln!("error: {shown}: node `{node}` failed: {error}");
                }
                failed = true;
            }
            RunStatus::Cancelled => {
                eprintln!("{shown}: cancelled");
                failed = true;
            }
        }
        if failed {
            break;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A validated workflow: its file, how it is shown, the workflow, its graph, and the folders it may read
/// from (`None`: anywhere).
type Prepared = (
    PathBuf,
    String,
    Workflow,
    veetance_engine::Graph,
    Option<Vec<PathBuf>>,
);

/// Reads, parses, applies overrides and validates one file. `Ok(None)` means diagnostics were
/// printed.
fn prepare(
    path: &Path,
    args: &RunArgs,
    registry: &veetance_engine::Registry,
) -> Result<Option<Prepared>> {
    let shown = path.display().to_string();
    let source = read_workflow_source(path)?;
    let mut workflow = match Workflow::parse(&source) {
        Ok(workflow) => workflow,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, &source, &shown);
            return Ok(None);
        }
    };
    for assignment in &args.overrides {
        apply_override(&mut workflow, registry, assignment)?;
    }
    let validation = validate(&workflow, registry, Some(&source));
    print_diagnostics(&validation.diagnostics, &source, &shown);
    let read_roots = (is_picture(path) && !args.trust).then(|| read_roots(path, args));
    Ok(validation
        .graph
        .map(|graph| (path.to_path_buf(), shown, workflow, graph, read_roots)))
}

/// Where a workflow from the picture at `path` may read: the picture's folder, the output
/// folder, the model folders, the built-in model and every `--allow-read` folder.
fn read_roots(path: &Path, args: &RunArgs) -> Vec<PathBuf> {
    let mut roots = vec![
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        args.out.clone(),
    ];
    roots.extend(super::models::model_dirs(&args.models_dirs));
    roots.extend(veetance_nodes::builtin_tiny_dir().ok());
    roots.extend(args.allow_read.iter().cloned());
    roots
}

/// First Ctrl+C cancels cleanly (between nodes and sampler steps); the second aborts.
fn install_ctrl_c(cancel: &CancelToken) {
    let cancel = cancel.clone();
    let presses = AtomicUsize::new(0);
    let _ = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\ncancelling... (press Ctrl+C again to abort)");
            cancel.cancel();
        } else {
            eprintln!("\naborted");
            std::process::exit(130);
        }
    });
}
