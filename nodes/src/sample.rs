//! Sample: flow-matching Euler sampling with the FLUX.2 schedule.

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use veetance_engine::{
    DataType, InputSpec, Literal, MemoryEstimate, NodeCtx, NodeError, NodeInputs, NodeKind,
    NodeSpec, OutputSpec, Outputs, RunEnv,
};
use veetance_models::latent::grid_for_requested_size;
use veetance_models::{Flux2Transformer, SampleRequest, Start, sample, seeded_noise};

use crate::device::{model_error, tensor_error};
use crate::encode::text_encoder_on_device;
use crate::payload::{ModelValue, ReferencesValue, TensorValue, TextEncoderValue};
use crate::placement::{
    budget_error, latent_stand_in, limit_device, part_use, placed, profile_input,
    resident_layer_bytes, text_encoder_key, transformer_key,
};
use crate::types;

fn on_device(value: &TensorValue, device: &Device) -> Result<Tensor, NodeError> {
    value
        .0
        .to_device(device)
        .map_err(tensor_error("moving a tensor to the model's device"))
}

/// The transformer to sample with: the model's own; under a memory plan the copy placed as the
/// plan says (its resident blocks kept for later runs, the rest streamed during each step); for
/// Load's `offload` a whole device copy, dropped when sampling ends. Compiled if Compile asked
/// for it.
fn transformer_on_device(
    model: &ModelValue,
    ctx: &NodeCtx<'_>,
) -> Result<Flux2Transformer, NodeError> {
    let Some(device) = &model.offload_to else {
        return Ok(model.transformer.clone());
    };
    let on_device = match (ctx.memory_plan(), &model.part_key) {
        (Some(plan), Some(key)) => {
            // The budget may have changed since Load ran (the editor's slider): hold to this one.
            limit_device(ctx, device)?;
            let layers: u64 = model.transformer.layer_bytes().iter().sum();
            let keep = resident_layer_bytes(plan, key, layers);
            let placed = placed(ctx, key, keep, keep, || {
                model
                    .transformer
                    .placed(device, keep)
                    .map_err(budget_error(ctx, "placing the transformer on the device"))
            })?;
            // A pooled copy may come from a run with another attention backend.
            placed.with_attention(model.transformer.attention().clone())
        }
        _ => model.transformer.to_device(device).map_err(model_error(
            "moving the offloaded transformer to the device",
        ))?,
    };
    match &model.compile_on_device {
        Some(options) => on_device
            .compile(options)
            .map_err(model_error("compiling the model")),
        None => Ok(on_device),
    }
}

/// The empty prompt's conditioning for CFG (`None` for step-distilled models), encoded before
/// the transformer moves in; under a memory plan with the text encoder placed as the plan says.
fn negative_prompt(model: &ModelValue, ctx: &NodeCtx<'_>) -> Result<Option<Tensor>, NodeError> {
    let bundle = &model.bundle;
    if bundle.is_distilled {
        return Ok(None);
    }
    match (ctx.memory_plan(), &model.part_key) {
        (Some(_), Some(key)) => {
            let bundle_key = key.split('#').next().unwrap_or(key);
            let encoder = TextEncoderValue {
                bundle: bundle.clone(),
                offload_to: model.offload_to.clone(),
                part_key: bundle_key
                    .strip_suffix("/transformer")
                    .map(text_encoder_key),
            };
            let placed = text_encoder_on_device(&encoder, ctx)?;
            placed
                .encode(&[""])
                .map(Some)
                .map_err(budget_error(ctx, "encoding the empty negative prompt"))
        }
        _ => bundle
            .negative_conditioning_on(model.offload_to.as_ref())
            .map_err(model_error("encoding the empty negative prompt")),
    }
}

/// The `Sample` node.
pub struct Sample;

impl NodeKind for Sample {
    fn spec() -> NodeSpec {
        NodeSpec::new(
            "Sample",
            "sampling",
            "Flow-matching Euler sampling with the FLUX.2 schedule. `noise` replaces the seeded noise; `latent` with denoise < 1 is img2img.",
        )
        .describes_output()
        .input(InputSpec::new("model", types::MODEL).doc("The denoising model."))
        .input(InputSpec::new("positive", types::CONDITIONING).doc("What to draw."))
        .input(
            InputSpec::new("negative", types::CONDITIONING)
                .optional()
                .doc("What to avoid (CFG, used when guidance > 1)."),
        )
        .input(
            InputSpec::new("noise", types::LATENT)
                .optional()
                .doc("Initial noise [B, 128, h, w] instead of the seeded noise."),
        )
        .input(InputSpec::new("latent", types::LATENT).optional().doc("Start latent for img2img."))
        .input(
            InputSpec::new("references", types::REFERENCES)
                .optional()
                .doc("Pictures to edit or compose from (Reference nodes); the first sets the size when none is given."),
        )
        .input(
            InputSpec::new("denoise", DataType::FLOAT)
                .default_value(Literal::Float(1.0))
                .range(0.0, 1.0)
                .doc("Fraction of the schedule to run from `latent`; below 1 keeps part of it, 0 returns it unchanged."),
        )
        .input(
            InputSpec::new("seed", DataType::INT)
                .default_value(Literal::Int(0))
                .doc("Noise seed (any integer); the same seed gives the same image."),
        )
        .input(
            InputSpec::new("steps", DataType::INT)
                .optional()
                .range(1.0, 1000.0)
                .doc("Sampling steps [model default]."),
        )
        .input(
            InputSpec::new("guidance", DataType::FLOAT)
                .optional()
                .range(0.0, 100.0)
                .doc("Guidance scale [model default]."),
        )
        .input(
            InputSpec::new("width", DataType::INT)
                .optional()
                .range(16.0, 8192.0)
                .doc("Image width in pixels, rounded down to whole tokens as diffusers does [the first reference's; else the model default]."),
        )
        .input(
            InputSpec::new("height", DataType::INT)
                .optional()
                .range(16.0, 8192.0)
                .doc("Image height in pixels, rounded down to whole tokens as diffusers does [the first reference's; else the model default]."),
        )
        .output(OutputSpec::new(
            "latent",
            types::LATENT,
            "The denoised latent [B, 128, h, w].",
        ))
    }

    fn estimate(inputs: &NodeInputs, _env: &RunEnv) -> MemoryEstimate {
        let Some(value) = profile_input(inputs, "model") else {
            return MemoryEstimate::default();
        };
        let p = &value.profile;
        let side = p.default_size_px as u64;
        let size = |name: &str| {
            inputs
                .opt_int(name)
                .ok()
                .flatten()
                .map_or(side, |v| v.max(0) as u64)
        };
        let (width_px, height_px) = (size("width"), size("height"));
        let token_px = (p.vae_config.spatial_factor() * 2).max(1) as u64;
        let image_tokens = (width_px / token_px) * (height_px / token_px);
        let steps = inputs
            .opt_int("steps")
            .ok()
            .flatten()
            .map_or(p.default_steps as u64, |v| v.max(1) as u64);
        let guidance = inputs
            .opt_float("guidance")
            .ok()
            .flatten()
            .unwrap_or(p.default_guidance);
        // Like the sampler: a non-distilled model with guidance above 1 runs two passes a step.
        let passes_per_step = if !p.is_distilled && guidance > 1.0 {
            2
        } else {
            1
        };
        MemoryEstimate {
            vram_bytes: p.sample_working_bytes(image_tokens),
            uses: vec![part_use(
                transformer_key(&value.key),
                steps * passes_per_step,
            )],
            outputs: vec![latent_stand_in(height_px, width_px)],
            ..MemoryEstimate::default()
        }
    }

    fn run(inputs: &NodeInputs, ctx: &NodeCtx<'_>) -> Result<Outputs, NodeError> {
        let model = inputs.object::<ModelValue>("model")?;
        let bundle = &model.bundle;
        let guidance_given = inputs.opt_float("guidance")?;
        // Before the transformer moves in: an offloaded text encoder visits the GPU for the empty
        // prompt and leaves again, so the two are never resident together.
        let negative = match inputs.opt_object::<TensorValue>("negative")? {
            Some(value) => Some((*value).clone()),
            // Like diffusers: a non-distilled model with guidance > 1 always runs CFG, against
            // the empty prompt when no negative is linked.
            None if guidance_given.unwrap_or(bundle.defaults.guidance) > 1.0 => {
                negative_prompt(&model, ctx)?.map(TensorValue)
            }
            None => None,
        };
        // Cancelling stops a step between transformer blocks, not only between steps.
        let transformer = transformer_on_device(&model, ctx)?.with_interrupt(ctx.cancel_flag());
        let device = transformer.device().clone();
        let positive = on_device(&*inputs.object::<TensorValue>("positive")?, &device)?;
        let negative = negative
            .map(|value| on_device(&value, &device))
            .transpose()?;
        let steps = match inputs.opt_int("steps")? {
            Some(steps) => {
                usize::try_from(steps).map_err(|_| NodeError::msg("steps must be positive"))?
            }
            None => bundle.defaults.steps,
        };
        let guidance = guidance_given.unwrap_or(bundle.defaults.guidance);
        let references = match inputs.opt_object::<ReferencesValue>("references")? {
            Some(value) => value
                .0
                .iter()
                .map(|latent| {
                    latent
                        .to_device(&device)
                        .map_err(tensor_error("moving a reference to the model's device"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        // As diffusers: without a size, the picture takes the first reference's (its latent
        // grid times the token size).
        let (default_width_px, default_height_px) = match references.first() {
            Some(first) => {
                let (_, _, grid_h, grid_w) = first
                    .dims4()
                    .map_err(tensor_error("reading the first reference's shape"))?;
                let step_px = bundle.vae.pixels_per_token();
                (grid_w * step_px, grid_h * step_px)
            }
            None => model.default_size_px,
        };
        let width_px = inputs
            .opt_int("width")?
            .map_or(default_width_px, |v| v.max(0) as usize);
        let height_px = inputs
            .opt_int("height")?
            .map_or(default_height_px, |v| v.max(0) as usize);
        let init_latent = match inputs.opt_object::<TensorValue>("latent")? {
            Some(latent) => Some(on_device(&latent, &device)?),
            None => None,
        };
        let noise = match inputs.opt_object::<TensorValue>("noise")? {
            Some(noise) => on_device(&noise, &device)?,
            None => {
                // The noise takes the start latent's shape in img2img, else the requested size's.
                let shape = match &init_latent {
                    Some(latent) => latent
                        .dims4()
                        .map_err(tensor_error("reading the start latent's shape"))?,
                    None => {
                        let (grid_h, grid_w) = grid_for_requested_size(
                            height_px,
                            width_px,
                            bundle.vae.pixels_per_token(),
                        )
                        .map_err(model_error("choosing the latent size"))?;
                        (1, model.transformer.config().in_channels, grid_h, grid_w)
                    }
                };
                // The seed is used as raw bits, so every integer is a distinct seed.
                seeded_noise(inputs.int("seed")? as u64, shape, &device)
                    .map_err(model_error("making the seeded noise"))?
            }
        };
        let start = match init_latent {
            Some(latent) => Start::Image {
                latent,
                noise,
                denoise: inputs.float("denoise")?,
            },
            None => Start::Noise(noise),
        };
        let request = SampleRequest {
            positive: &positive,
            negative: negative.as_ref(),
            start,
            steps,
            guidance,
            scheduler: &bundle.scheduler,
            references: &references,
        };
        ctx.progress(0, steps as u64);
        let latent = sample(&transformer, &request, |step, total| {
            ctx.progress(step as u64, total as u64);
            if ctx.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(budget_error(ctx, "sampling"))?;
        Ok(Outputs::new().with_object("latent", types::LATENT, TensorValue(latent)))
    }
}
