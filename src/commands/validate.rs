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
        let (source, diagnostics) = match read_workflow_source(path) {
            Err(err) => {
                eprintln!("error: {err:#}");
                any_errors = true;
                continue;
            }
            Ok(source) => {
                let diagnostics = match Workflow::parse(&source) {
                    Err(diagnostics) => diagnostics,
                    Ok(workflow) => {
                        validate_workflow(&workflow, &registry, Some(&source)).diagnostics
                    }
                };
                (source, diagnostics)
            }
        };
        let n_errors = diagnostics.iter().filter(|d| d.is_error()).count();
        any_errors |= n_errors > 0;
        if args.json {
            outln!(
                "{}",
                json!({"file": shown, "ok": n_errors == 0, "diagnostics": diagnostics})
            )?;
        } else {
            print_diagnostics(&diagnostics, &source, &shown);
            if n_errors == 0 {
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
