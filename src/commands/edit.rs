//! `veetance edit`: opens the node editor window (the `editor` feature).

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::EditArgs;

#[cfg(feature = "editor")]
pub fn edit(args: &EditArgs) -> Result<ExitCode> {
    let registry = std::sync::Arc::new(veetance_nodes::registry()?);
    let model_dirs = super::models::model_dirs(&args.models_dirs);
    let catalog_dirs = model_dirs.clone();
    let catalog =
        veetance_editor::catalog::CatalogLookup(std::sync::Arc::new(move |name: &str| {
            veetance_nodes::models::catalog_names(&catalog_dirs, name)
        }));
    veetance_editor::run_native(args.file.clone(), registry, model_dirs, Some(catalog))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "editor"))]
pub fn edit(args: &EditArgs) -> Result<ExitCode> {
    let _ = args;
    anyhow::bail!(
        "this veetance was built without the editor (the `editor` feature); rebuild with default features"
    )
}
