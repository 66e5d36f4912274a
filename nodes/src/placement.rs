//! Model parts under the run's memory plan ([`veetance_engine::plan`]): the stand-ins Load's
//! estimate hands downstream estimates (a checkpoint's [`BundleProfile`], a latent's size), the
//! parts and uses the nodes declare, and placing a part on the GPU at run time with as many
//! layers resident as the plan allows, the rest streamed ([`veetance_models::streaming`]).
//! Placed copies live in the run environment's `placed` pool, so resident layers stay on the
//! GPU between runs with the same plan.

use std::sync::Arc;

use candle_core::Device;
use veetance_engine::{
    MemoryPlan, ModelPart, NodeCtx, NodeError, NodeInputs, Object, PartUse, Payload, Placement,
    Value,
};
use veetance_models::profile::{BundleProfile, PartProfile};

use crate::types;

/// Load's stand-in for its outputs in estimates: the checkpoint's memory profile and the key
/// its parts are planned under.
#[derive(Debug)]
pub struct ProfileValue {
    /// Sizes from the headers.
    pub profile: Arc<BundleProfile>,
    /// The key prefix of the bundle's parts.
    pub key: String,
}

impl Payload for ProfileValue {
    fn size_bytes(&self) -> u64 {
        0
    }
}

/// Sample's stand-in for its latent in estimates: the picture size it will decode to.
#[derive(Debug)]
pub struct LatentSizeValue {
    /// Height in pixels.
    pub height_px: u64,
    /// Width in pixels.
    pub width_px: u64,
}

impl Payload for LatentSizeValue {
    fn size_bytes(&self) -> u64 {
        0
    }
}

/// The key of the transformer part of the bundle planned under `key`.
pub fn transformer_key(key: &str) -> String {
    format!("{key}/transformer")
}

/// The key of the text-encoder part.
pub fn text_encoder_key(key: &str) -> String {
    format!("{key}/text_encoder")
}

/// The key of the VAE part.
pub fn vae_key(key: &str) -> String {
    format!("{key}/vae")
}

fn part(key: String, label: &str, profile: &PartProfile) -> ModelPart {
    ModelPart {
        key,
        label: label.to_owned(),
        fixed_bytes: profile.fixed_bytes,
        layer_bytes: profile.layer_bytes.iter().sum(),
        largest_layer_bytes: profile.largest_layer_bytes(),
    }
}

/// The parts a bundle makes: transformer and text encoder (layers may stream), VAE (resident).
pub fn bundle_parts(value: &ProfileValue) -> Vec<ModelPart> {
    let p = &value.profile;
    vec![
        part(transformer_key(&value.key), "transformer", &p.transformer),
        part(
            text_encoder_key(&value.key),
            "text encoder",
            &p.text_encoder,
        ),
        ModelPart {
            key: vae_key(&value.key),
            label: "VAE".into(),
            fixed_bytes: p.vae_bytes,
            layer_bytes: 0,
            largest_layer_bytes: 0,
        },
    ]
}

/// The stand-ins for Load's three outputs.
pub fn bundle_stand_ins(value: ProfileValue) -> Vec<(String, Value)> {
    let value = Arc::new(value);
    [
        ("model", types::MODEL),
        ("text_encoder", types::TEXT_ENCODER),
        ("vae", types::VAE),
    ]
    .into_iter()
    .map(|(name, data_type)| {
        (
            name.to_owned(),
            Value::Object(Object::new(data_type, Shared(value.clone()))),
        )
    })
    .collect()
}

/// A shared stand-in (one profile behind Load's three outputs).
#[derive(Debug)]
struct Shared(Arc<ProfileValue>);

impl Payload for Shared {
    fn size_bytes(&self) -> u64 {
        0
    }
}

/// The bundle profile an estimate's input carries, if its upstream left one.
pub fn profile_input(inputs: &NodeInputs, name: &str) -> Option<Arc<ProfileValue>> {
    inputs
        .opt_object::<Shared>(name)
        .ok()
        .flatten()
        .map(|shared| shared.0.clone())
}

/// An estimate's pass-through of a model stand-in: nodes that hand the model on unchanged
/// (Compile, SageAttention, LoadLora) give downstream estimates what they got.
pub fn pass_model_through(inputs: &NodeInputs) -> Vec<(String, Value)> {
    inputs
        .get("model")
        .filter(|v| matches!(v, Value::Object(o) if o.data_type() == types::MODEL))
        .map(|v| vec![("model".to_owned(), v.clone())])
        .unwrap_or_default()
}

/// A use of `key` read `passes` times.
pub fn part_use(key: String, passes: u64) -> PartUse {
    PartUse { key, passes }
}

/// The stand-in for Sample's latent.
pub fn latent_stand_in(height_px: u64, width_px: u64) -> (String, Value) {
    (
        "latent".to_owned(),
        Value::Object(Object::new(
            types::LATENT,
            LatentSizeValue {
                height_px,
                width_px,
            },
        )),
    )
}

/// Layer bytes to keep resident for the part `key` whose loaded layers total
/// `layer_total_bytes`: the plan's figure, lowered if the loaded layers are larger than the
/// estimate so that at least the planned bytes stream. All of them when the plan does not know
/// the part (it streams everything: safe, slow). A variant of a part (a LoRA applied,
/// `part#variant`) is planned as the part.
pub fn resident_layer_bytes(plan: &MemoryPlan, key: &str, layer_total_bytes: u64) -> u64 {
    let part = key.split('#').next().unwrap_or(key);
    match plan.part(part).map(|p| &p.placement) {
        Some(Placement::Resident) => layer_total_bytes,
        Some(Placement::Streamed {
            resident_bytes,
            streamed_bytes,
        }) => (*resident_bytes).min(layer_total_bytes.saturating_sub(*streamed_bytes)),
        None => 0,
    }
}

/// The copy of a part placed for `resident` layer bytes: from the `placed` pool if it is there,
/// else made by `place` (after dropping the part's other placements, so two never share the
/// budget) and kept if any layer is resident.
pub fn placed<T: Send + Sync + 'static>(
    ctx: &NodeCtx<'_>,
    key: &str,
    resident: u64,
    size_bytes: u64,
    place: impl FnOnce() -> Result<T, NodeError>,
) -> Result<Arc<T>, NodeError> {
    let pool = &ctx.env().placed;
    let entry = format!("{key}|{resident}");
    if let Some(found) = pool.get::<T>(&entry) {
        return Ok(found);
    }
    pool.remove_prefix(&format!("{key}|"));
    // Placements of parts this run's plan does not have (another model loaded before) would
    // hold VRAM the plan gives to others.
    if let Some(plan) = ctx.memory_plan() {
        pool.retain(|entry| {
            let part = entry.rsplit_once('|').map_or(entry, |(part, _)| part);
            let part = part.split('#').next().unwrap_or(part);
            plan.part(part).is_some()
        });
    }
    let made = Arc::new(place()?);
    if resident > 0 {
        pool.insert(&entry, made.clone(), size_bytes);
    }
    Ok(made)
}

/// Turns a model error into a node error that names the VRAM budget when the device ran out
/// of memory under it.
pub fn budget_error<'a>(
    ctx: &'a NodeCtx<'_>,
    context: &'static str,
) -> impl Fn(veetance_models::ModelError) -> NodeError + 'a {
    move |err| {
        let out_of_memory = format!("{err:?}").contains("OUT_OF_MEMORY");
        match (ctx.env().vram_budget_bytes, out_of_memory) {
            (Some(budget), true) => NodeError::msg(format!(
                "{context}: out of the VRAM budget ({}): the memory plan's estimate for this node \
                 was too low; raise --vram-budget or lower the size ({err})",
                veetance_engine::format_bytes(budget)
            )),
            _ => crate::device::model_error(context)(err),
        }
    }
}

/// Sets the hard VRAM limit of the run on `device`: the plan's allocation limit (the budget
/// less the GPU runtime's own memory). A no-op without a plan or off CUDA.
pub fn limit_device(ctx: &NodeCtx<'_>, device: &Device) -> Result<(), NodeError> {
    if let Some(plan) = ctx.memory_plan() {
        veetance_models::device::limit_vram(device, plan.allocation_limit_bytes())
            .map_err(|err| NodeError::with_context("limiting VRAM to the budget", err))?;
        // What the previous node freed returns to the limit in one piece.
        veetance_models::device::trim_vram(device);
    }
    Ok(())
}
