//! `veetance validate`: print every problem of every file.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use veetance_engine::diagnostic::{render, render_styled};
use veetance_engine::{Diagnostic, Workflow, validate as validate_workflow};

use crate::cli::ValidateArgs;
use crate::input::read_workflow_source;

pub fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let registry = veetance_nodes::registry()?;
    let mut any_errors = false;
    for path in &args.files {
        let shown = path.display().to_string();
        let (source, diagnostics, graph) = match read_workflow_source(path) {
            Err(err) => {
                eprintln!("error: {err:#}");
                any_errors = true;
                continue;
            }
            Ok(source) => match Workflow::parse(&source) {
                Err(diagnostics) => (source, diagnostics, None),
                Ok(workflow) => {
                    let validation = validate_workflow(&workflow, &registry, Some(&source));
                    (source, validation.diagnostics, validation.graph)
                }
            },
        };
        let n_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        any_errors |= n_errors > 0;
        let plan = match (args.vram_budget, &graph) {
            (Some(budget), Some(graph)) => Some(plan_memory(path, graph, budget, args)),
            _ => None,
        };
        if let Some(Err(_)) = &plan {
            any_errors = true;
        }
        if args.json {
            let mut object =
                json!({"file": shown, "ok": n_errors == 0, "diagnostics": diagnostics});
            match &plan {
                Some(Ok(plan)) => object["memory_plan"] = json!(plan),
                Some(Err(err)) => object["memory_plan_error"] = json!(err.to_string()),
                None => {}
            }
            outln!("{object}")?;
        } else {
            print_diagnostics(&diagnostics, &source, &shown);
            match &plan {
                Some(Ok(plan)) => {
                    for line in plan.describe() {
                        outln!("{line}")?;
                    }
                }
                Some(Err(err)) => eprintln!("error: {shown}: {err}"),
                None => {}
            }
            if n_errors == 0 && !matches!(plan, Some(Err(_))) {
                outln!("{shown}: ok")?;
            }
        }
    }
    Ok(if any_errors {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The memory plan `run` would make for `graph` under `budget_bytes` (nothing assumed cached).
fn plan_memory(
    path: &std::path::Path,
    graph: &veetance_engine::Graph,
    budget_bytes: u64,
    args: &ValidateArgs,
) -> Result<veetance_engine::MemoryPlan, veetance_engine::PlanError> {
    let env = veetance_engine::RunEnv {
        workflow_dir: veetance_engine::RunEnv::folder_of(path),
        device: args.device.name().to_owned(),
        model_dirs: super::models::model_dirs(&args.models_dirs),
        vram_budget_bytes: Some(budget_bytes),
        ..veetance_engine::RunEnv::new(std::env::temp_dir())
    };
    let options = veetance_engine::RunOptions {
        targets: None,
        budgets: veetance_engine::Budgets {
            ram_bytes: None,
            vram_bytes: Some(budget_bytes),
        },
    };
    veetance_engine::memory_plan(graph, &env, &options).map(|plan| plan.unwrap_or_default())
}

/// Renders diagnostics on stderr, with colour on a terminal, and a count line.
pub fn print_diagnostics(diagnostics: &[Diagnostic], source: &str, shown: &str) {
    if diagnostics.is_empty() {
        return;
    }
    let text = if std::io::stderr().is_terminal() {
        render_styled(diagnostics, source, shown)
    } else {
        render(diagnostics, source, shown)
    };
    eprint!("{text}");
    let n_errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if n_errors > 0 {
        eprintln!(
            "{shown}: {n_errors} error{}",
            if n_errors == 1 { "" } else { "s" }
        );
    }
}
