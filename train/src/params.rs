//! Trainable parameter sets named exactly like checkpoint tensors, plus their EMA.
//!
//! A [`Params`] is a `VarMap` whose names are the diffusers/transformers tensor names the models
//! crate asks for. A model is built from it with the ordinary `from_weights` constructors over
//! [`veetance_models::weights::Weights::from_tensors`]; those hand the variables' tensors through,
//! so the loss's gradients land on the variables. Building a model is cheap (no copies except the
//! fused q/k/v concatenation), so training rebuilds it after every optimiser step.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};
use veetance_models::weights::{TensorSpec, Weights};

use crate::TrainError;

/// Named trainable tensors (f32).
pub struct Params {
    map: VarMap,
}

/// How a tensor starts, from its name and shape.
fn init_for(name: &str, shape: &[usize]) -> Init {
    if name.ends_with(".bias") {
        return Init::Const(0.0);
    }
    if shape.len() == 1 {
        // Norm scales (RMSNorm, GroupNorm weight) start at one.
        return Init::Const(1.0);
    }
    // The output projection starts small so the untrained model predicts near-zero velocity, and
    // the modulation so that every block starts close to the identity (adaLN-zero's intent).
    let small = name == "proj_out.weight"
        || name.ends_with("modulation.linear.weight")
        || name == "norm_out.linear.weight";
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let stdev = if name.ends_with("embed_tokens.weight") {
        1.0
    } else {
        1.0 / (fan_in as f64).sqrt()
    };
    Init::Randn {
        mean: 0.0,
        stdev: if small { stdev * 0.1 } else { stdev },
    }
}

impl Params {
    /// Fresh parameters for every spec (randomly initialised; `candle` seeds per device).
    pub fn new(specs: &[TensorSpec], device: &Device) -> Result<Self, TrainError> {
        let map = VarMap::new();
        for spec in specs {
            map.get(
                spec.shape.as_slice(),
                &spec.name,
                init_for(&spec.name, &spec.shape),
                DType::F32,
                device,
            )?;
        }
        Ok(Self { map })
    }

    /// All variables (for the optimiser).
    pub fn vars(&self) -> Vec<Var> {
        self.map.all_vars()
    }

    /// The variables' current tensors by name.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let data = self
            .map
            .data()
            .lock()
            .map_err(|_| TrainError::Config("parameter map lock poisoned".into()))?;
        Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect())
    }

    /// The tensors (plus `extra` constants such as BatchNorm statistics) as model weights.
    pub fn weights(&self, extra: &HashMap<String, Tensor>) -> Result<Weights, TrainError> {
        let mut tensors = self.tensors()?;
        tensors.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Weights::from_tensors(Path::new("<training>"), tensors))
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Saves all variables (f32) for resuming.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.map.save(path)?;
        Ok(())
    }

    /// Loads variables saved by [`Params::save`] into this set (names and shapes must match).
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        self.map.load(path)?;
        Ok(())
    }

    /// Overwrites the variables with `values` (e.g. to export or evaluate the EMA).
    pub fn set_all(&self, values: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let data = self
            .map
            .data()
            .lock()
            .map_err(|_| TrainError::Config("parameter map lock poisoned".into()))?;
        for (name, var) in data.iter() {
            if let Some(v) = values.get(name) {
                var.set(v)?;
            }
        }
        Ok(())
    }
}

/// Exponential moving average of a parameter set, with the usual warm-up so that early steps are
/// not dominated by the random initialisation: decay = min(max_decay, (1 + step) / (10 + step)).
pub struct Ema {
    max_decay: f64,
    shadow: HashMap<String, Tensor>,
}

impl Ema {
    /// Starts from the current values.
    pub fn new(params: &Params, max_decay: f64) -> Result<Self, TrainError> {
        let shadow = params
            .tensors()?
            .into_iter()
            .map(|(k, t)| Ok((k, t.detach().copy()?)))
            .collect::<Result<_, TrainError>>()?;
        Ok(Self { max_decay, shadow })
    }

    /// Moves the average towards the current values.
    pub fn update(&mut self, params: &Params, step: usize) -> Result<(), TrainError> {
        let decay = self
            .max_decay
            .min((1.0 + step as f64) / (10.0 + step as f64));
        for (name, t) in params.tensors()? {
            if let Some(s) = self.shadow.get_mut(&name) {
                *s = ((&*s * decay)? + (t.detach() * (1.0 - decay))?)?;
            }
        }
        Ok(())
    }

    /// The averaged tensors.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.shadow
    }

    /// Saves the average.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        candle_core::safetensors::save(&self.shadow, path)?;
        Ok(())
    }

    /// Loads an average saved by [`Ema::save`] (for resuming).
    pub fn load(&mut self, path: &Path, device: &Device) -> Result<(), TrainError> {
        let loaded = candle_core::safetensors::load(path, device)?;
        for (name, t) in loaded {
            if let Some(s) = self.shadow.get_mut(&name) {
                *s = t;
            }
        }
        Ok(())
    }
}
