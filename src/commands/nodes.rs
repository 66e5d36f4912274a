//! `veetance nodes`: every node spec, for people or (with `--json`) in full for programs.

use std::process::ExitCode;

use anyhow::Result;
use veetance_engine::{Literal, Purity};

use crate::cli::NodesArgs;

pub fn nodes(args: &NodesArgs) -> Result<ExitCode> {
    let registry = veetance_nodes::registry();
    let specs: Vec<_> = registry
        .nodes_sorted()
        .into_iter()
        .map(|n| n.spec())
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&specs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut category = "";
    for spec in specs {
        if spec.category != category {
            category = &spec.category;
            println!("\n[{category}]");
        }
        let effect = if spec.purity == Purity::Effect {
            " (effect)"
        } else {
            ""
        };
        println!(
            "{} v{}{effect}: {}",
            spec.kind, spec.version, spec.description
        );
        for input in &spec.inputs {
            let mut extra = Vec::new();
            if let Some(default) = &input.default {
                extra.push(format!("default {}", literal_text(default)));
            } else if input.optional {
                extra.push("optional".to_owned());
            }
            if let (Some(min), Some(max)) = (input.min, input.max) {
                extra.push(format!("{min}..={max}"));
            }
            if !input.choices.is_empty() {
                extra.push(format!("one of {}", input.choices.join("|")));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" [{}]", extra.join("; "))
            };
            println!(
                "    in  {}: {}{extra}  {}",
                input.name, input.data_type, input.doc
            );
        }
        for output in &spec.outputs {
            println!(
                "    out {}: {}  {}",
                output.name, output.data_type, output.doc
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn literal_text(literal: &Literal) -> String {
    match literal {
        Literal::Text(text) => format!("{text:?}"),
        Literal::Int(v) => v.to_string(),
        Literal::Float(v) => format!("{v:?}"),
        Literal::Bool(v) => v.to_string(),
    }
}
