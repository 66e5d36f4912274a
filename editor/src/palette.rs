//! The node palette: every node kind, searchable by name and category, optionally filtered
//! to kinds that can take or give a wire's data type.

use egui::Ui;
use veetance_engine::{DataType, NodeSpec, Registry};

/// Which kinds to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// All kinds.
    All,
    /// Kinds with an input accepting this type (a wire dragged from an output).
    TakesInput(DataType),
    /// Kinds with an output this input type accepts (a wire dragged from an input).
    GivesOutput(DataType),
}

/// Whether `spec` passes `filter` and matches `query` (case-insensitive words, each found in
/// the kind, category or description).
pub fn matches(spec: &NodeSpec, filter: Filter, query: &str) -> bool {
    let fits = match filter {
        Filter::All => true,
        Filter::TakesInput(from) => spec.inputs.iter().any(|i| i.data_type.accepts(from)),
        Filter::GivesOutput(to) => spec.outputs.iter().any(|o| to.accepts(o.data_type)),
    };
    let haystack = format!("{} {} {}", spec.kind, spec.category, spec.description).to_lowercase();
    fits && query
        .to_lowercase()
        .split_whitespace()
        .all(|word| haystack.contains(word))
}

/// The search field and the matching kinds, grouped by category. Returns the kind clicked,
/// or the first match when Enter is pressed in the search field.
pub fn palette_list(
    ui: &mut Ui,
    registry: &Registry,
    query: &mut String,
    filter: Filter,
    focus_search: bool,
) -> Option<String> {
    let search = ui.add(
        egui::TextEdit::singleline(query)
            .hint_text("search nodes")
            .desired_width(220.0),
    );
    if focus_search && !search.has_focus() && query.is_empty() {
        search.request_focus();
    }
    let mut specs: Vec<&NodeSpec> = registry
        .nodes_sorted()
        .into_iter()
        .map(|n| n.spec())
        .filter(|spec| matches(spec, filter, query))
        .collect();
    specs.sort_by(|a, b| (&a.category, &a.kind).cmp(&(&b.category, &b.kind)));
    let mut chosen = None;
    if search.lost_focus()
        && ui.input(|i| i.key_pressed(egui::Key::Enter))
        && let Some(first) = specs.first()
    {
        chosen = Some(first.kind.clone());
    }
    egui::ScrollArea::vertical()
        .max_height(320.0)
        .show(ui, |ui| {
            let mut category = "";
            for spec in &specs {
                if spec.category != category {
                    category = &spec.category;
                    ui.label(egui::RichText::new(category).small().weak());
                }
                if ui
                    .button(&spec.kind)
                    .on_hover_text(&spec.description)
                    .clicked()
                {
                    chosen = Some(spec.kind.clone());
                }
            }
            if specs.is_empty() {
                ui.label("no matching node");
            }
        });
    chosen
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn dropped_wires_filter_to_compatible_kinds_and_search_matches_categories() {
        let registry = veetance_nodes::registry().unwrap();
        let names = |filter: Filter, query: &str| -> Vec<String> {
            registry
                .nodes_sorted()
                .into_iter()
                .map(|n| n.spec())
                .filter(|spec| matches(spec, filter, query))
                .map(|spec| spec.kind.clone())
                .collect()
        };
        // A wire from a Latent output: nodes that take a latent.
        let takes_latent = names(Filter::TakesInput(veetance_nodes::types::LATENT), "");
        assert!(takes_latent.contains(&"Decode".to_owned()));
        assert!(takes_latent.contains(&"Sample".to_owned()));
        assert!(!takes_latent.contains(&"Load".to_owned()));
        // A wire from a Vae input: nodes that give one.
        assert_eq!(
            names(Filter::GivesOutput(veetance_nodes::types::VAE), ""),
            ["Load"]
        );
        let category = registry.get("Sample").unwrap().spec().category.clone();
        assert!(names(Filter::All, &category).contains(&"Sample".to_owned()));
        assert!(names(Filter::All, "no such node at all").is_empty());
    }
}
