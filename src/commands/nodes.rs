//! `veetance nodes`: every node spec, for people or (with `--json`) in full for programs.

use std::process::ExitCode;

use anyhow::Result;
use veetance_engine::{Literal, Purity};

use crate::cli::NodesArgs;

pub fn nodes(args: &NodesArgs) -> Result<ExitCode> {
    let registry = veetance_nodes::registry()?;
    let specs: Vec<_> = registry
        .nodes_sorted()
        .into_iter()
        .map(|n| n.spec())
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&specs)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.markdown {
        out!("{}", markdown(&specs))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut category = "";
    for spec in specs {
        if spec.category != category {
            category = &spec.category;
            outln!("\n[{category}]")?;
        }
        let effect = if spec.purity == Purity::Effect {
            " (effect)"
        } else {
            ""
        };
        outln!(
            "{} v{}{effect}: {}",
            spec.kind,
            spec.version,
            spec.description
        )?;
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
            outln!(
                "    in  {}: {}{extra}  {}",
                input.name,
                input.data_type,
                input.doc
            )?;
        }
        for output in &spec.outputs {
            outln!(
                "    out {}: {}  {}",
                output.name,
                output.data_type,
                output.doc
            )?;
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

/// The node reference as Markdown, generated from the specs (docs/nodes.md).
fn markdown(specs: &[&veetance_engine::NodeSpec]) -> String {
    let mut out = String::from(
        "# Node reference\n\n\
         Generated from the node specs by `veetance nodes --markdown > docs/nodes.md`; a test fails when it is stale.\n\
         Port names are part of the workflow format.\n",
    );
    let mut category = "";
    for spec in specs {
        if spec.category != category {
            category = &spec.category;
            out.push_str(&format!("\n## {category}\n"));
        }
        let effect = if spec.purity == Purity::Effect {
            " Effect node: always runs, never cached."
        } else {
            ""
        };
        out.push_str(&format!(
            "\n### {}\n\n{}{effect} (spec version {})\n\n",
            spec.kind, spec.description, spec.version
        ));
        if !spec.inputs.is_empty() {
            out.push_str(
                "| input | type | default | allowed | description |\n|---|---|---|---|---|\n",
            );
            for input in &spec.inputs {
                let default = match (&input.default, input.optional) {
                    (Some(default), _) => format!("`{}`", literal_text(default)),
                    (None, true) => "optional".to_owned(),
                    (None, false) => "required".to_owned(),
                };
                let allowed = if !input.choices.is_empty() {
                    input
                        .choices
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else if let (Some(min), Some(max)) = (input.min, input.max) {
                    format!("{min} to {max}")
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "| `{}` | {} | {default} | {allowed} | {} |\n",
                    input.name, input.data_type, input.doc
                ));
            }
            out.push('\n');
        }
        if !spec.outputs.is_empty() {
            out.push_str("| output | type | description |\n|---|---|---|\n");
            for output in &spec.outputs {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    output.name, output.data_type, output.doc
                ));
            }
            out.push('\n');
        }
    }
    out
}
