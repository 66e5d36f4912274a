//! Export: write images and layers to files, with the workflow embedded in PNGs.

use std::sync::Arc;

use veetance_engine::{
    DataType, InputSpec, Literal, NodeCtx, NodeError, NodeInputs, NodeKind, NodeSpec, OutputSpec,
    Outputs, TextWidget, Value, Workflow,
};
use veetance_imaging::{ExportFormat, KEY_PARAMETERS, KEY_WORKFLOW};

use crate::payload::{ImageValue, LayersValue};
use crate::preview::preview_png;
use crate::types;

/// The generation parameters worth showing next to a picture, read from the workflow as run:
/// the literal inputs of its nodes whose spec says they describe the output (Load, Encode,
/// Sample).
pub fn parameters_json(workflow_ron: &str) -> String {
    let Ok(workflow) = Workflow::parse(workflow_ron) else {
        return "{}".to_owned();
    };
    let mut parameters = serde_json::Map::new();
    for (id, node) in &workflow.nodes.0 {
        if !crate::describing_kinds().contains(&node.kind) {
            continue;
        }
        let mut inputs = serde_json::Map::new();
        for (name, value) in &node.inputs.0 {
            let json = match value.literal() {
                Some(Literal::Int(v)) => serde_json::json!(v),
                Some(Literal::Float(v)) => serde_json::json!(v),
                Some(Literal::Bool(v)) => serde_json::json!(v),
                Some(Literal::Text(v)) => serde_json::json!(v),
                None => continue,
            };
            inputs.insert(name.clone(), json);
        }
        parameters.insert(
            id.clone(),
            serde_json::json!({"kind": node.kind, "inputs": inputs}),
        );
    }
    serde_json::Value::Object(parameters).to_string()
}

/// The `Export` node.
pub struct Export;

impl NodeKind for Export {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Export",
            "output",
            "Writes the image and/or layers: PNG with the workflow as run embedded, layered PSD, JPEG or WebP. `path` is a prefix; never overwrites (numbered suffix); writes atomically.",
        )
        .effect()
        .one_of(&["image", "layers"])
        .input(InputSpec::new("image", types::IMAGE).optional().doc("The image to write."))
        .input(
            InputSpec::new("layers", types::LAYERS)
                .optional()
                .doc("Layers to write (PSD), or to composite for flat formats."),
        )
        .input(
            InputSpec::new("path", DataType::TEXT)
                .default_value(Literal::Text("veetance".into()))
                .widget(TextWidget::Path)
                .doc("File name prefix, relative to --out (absolute paths and `..` are refused: outputs stay in the output folder)."),
        )
        .input(
            InputSpec::new("format", DataType::TEXT)
                .default_value(Literal::Text("png".into()))
                .choices(&["png", "psd", "jpg", "webp"])
                .doc("File format."),
        )
        .output(OutputSpec::new("files", DataType::TEXT, "The paths written, one per line."))
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let image = inputs.opt_object::<ImageValue>("image")?;
        let layers = inputs.opt_object::<LayersValue>("layers")?;
        if image.is_none() && layers.is_none() {
            return Err(NodeError::msg("Export needs an `image` or `layers` input"));
        }
        let format: ExportFormat = inputs
            .text("format")?
            .parse()
            .map_err(|err| NodeError::with_context("choosing the format", err))?;
        let prefix = ctx.output_path(inputs.text("path")?)?;
        if let Some(parent) = prefix.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                NodeError::with_context(format!("creating {}", parent.display()), err)
            })?;
        }
        let workflow = ctx.env().workflow_ron.to_string();
        let texts = [
            (KEY_WORKFLOW, workflow.clone()),
            (KEY_PARAMETERS, parameters_json(&workflow)),
        ];
        let written = veetance_imaging::export(
            &prefix,
            format,
            image.as_deref().map(|i| &i.0),
            layers.as_deref().map(|l| &l.0),
            &texts,
        )
        .map_err(|err| {
            NodeError::with_context(
                format!("writing {}.{}", prefix.display(), format.extension()),
                err,
            )
        })?;
        if let Some(image) = &image {
            ctx.preview(preview_png(&image.0)?);
        }
        let files = written.display().to_string();
        Ok(Outputs::new().with("files", Value::Text(Arc::from(files))))
    }
}
