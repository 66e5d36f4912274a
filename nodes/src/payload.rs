//! What the built-in data types hold, and how tensors and images go to the disk cache.
//!
//! Tensors (Conditioning, Latent) are candle tensors; they encode as f32 with their shape so a
//! cached prompt survives a restart. Images and layers encode as raw 8-bit pixels. Model
//! handles never go to disk: the model pool keeps them.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use veetance_engine::Payload;
use veetance_imaging::{Layers, RgbImage, RgbaImage};
use veetance_models::{Bundle, CompileOptions, Flux2Transformer};

/// A tensor value: Conditioning `[B, L, C]` or Latent `[B, 128, h, w]`.
#[derive(Debug, Clone)]
pub struct TensorValue(pub Tensor);

impl Payload for TensorValue {
    fn size_bytes(&self) -> u64 {
        (self.0.elem_count() * self.0.dtype().size_in_bytes()) as u64
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let dims = self.0.dims().to_vec();
        let values: Vec<f32> = self
            .0
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .ok()?;
        let mut bytes = Vec::with_capacity(4 + dims.len() * 8 + values.len() * 4);
        bytes.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for dim in &dims {
            bytes.extend_from_slice(&(*dim as u64).to_le_bytes());
        }
        for value in values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        Some(bytes)
    }
}

pub(crate) fn decode_tensor(bytes: &[u8]) -> Result<Arc<dyn Payload>, String> {
    Ok(Arc::new(TensorValue(tensor_from_bytes(bytes)?)))
}

/// A tensor encoded by [`TensorValue::encode`].
fn tensor_from_bytes(bytes: &[u8]) -> Result<Tensor, String> {
    let bad = || "truncated tensor entry".to_owned();
    let (rank_bytes, rest) = bytes.split_at_checked(4).ok_or_else(bad)?;
    let rank = u32::from_le_bytes(rank_bytes.try_into().map_err(|_| bad())?) as usize;
    if rank > 8 {
        return Err(format!("tensor rank {rank} is implausible"));
    }
    let (dim_bytes, data) = rest.split_at_checked(rank * 8).ok_or_else(bad)?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(8)
        .map(|chunk| {
            chunk
                .try_into()
                .map(|b| u64::from_le_bytes(b) as usize)
                .map_err(|_| bad())
        })
        .collect::<Result<_, _>>()?;
    let n_values = dims
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(bad)?;
    if data.len() != n_values.checked_mul(4).ok_or_else(bad)? {
        return Err(bad());
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| e.to_string())
}

/// Reference pictures for editing: their latents `[1, 128, h, w]` (clean, normalised, as
/// [`veetance_models::Vae::encode`] makes them), in order.
#[derive(Debug, Clone, Default)]
pub struct ReferencesValue(pub Vec<Tensor>);

/// Most references one value holds when read back from the disk cache (a bound on a corrupt
/// count, far above what a model attends to).
const MAX_REFERENCES: usize = 64;

impl Payload for ReferencesValue {
    fn size_bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let mut bytes = (self.0.len() as u32).to_le_bytes().to_vec();
        for latent in &self.0 {
            let encoded = TensorValue(latent.clone()).encode()?;
            bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        Some(bytes)
    }
}

pub(crate) fn decode_references(bytes: &[u8]) -> Result<Arc<dyn Payload>, String> {
    let bad = || "truncated references entry".to_owned();
    let (count, mut rest) = bytes.split_at_checked(4).ok_or_else(bad)?;
    let count = u32::from_le_bytes(count.try_into().map_err(|_| bad())?) as usize;
    if count > MAX_REFERENCES {
        return Err(format!("{count} references is implausible"));
    }
    let mut latents = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(8).ok_or_else(bad)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().map_err(|_| bad())?))
            .map_err(|_| bad())?;
        let (encoded, tail) = tail.split_at_checked(len).ok_or_else(bad)?;
        latents.push(tensor_from_bytes(encoded)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(Arc::new(ReferencesValue(latents)))
}

/// An RGB image.
#[derive(Debug, Clone)]
pub struct ImageValue(pub RgbImage);

impl Payload for ImageValue {
    fn size_bytes(&self) -> u64 {
        self.0.as_raw().len() as u64
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::with_capacity(8 + self.0.as_raw().len());
        bytes.extend_from_slice(&self.0.width().to_le_bytes());
        bytes.extend_from_slice(&self.0.height().to_le_bytes());
        bytes.extend_from_slice(self.0.as_raw());
        Some(bytes)
    }
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_at_checked(4)?;
    Some((u32::from_le_bytes(head.try_into().ok()?), rest))
}

pub(crate) fn decode_image(bytes: &[u8]) -> Result<Arc<dyn Payload>, String> {
    let (width, rest) = split_u32(bytes).ok_or("truncated image entry")?;
    let (height, pixels) = split_u32(rest).ok_or("truncated image entry")?;
    let image = RgbImage::from_raw(width, height, pixels.to_vec())
        .ok_or("image entry has the wrong size")?;
    Ok(Arc::new(ImageValue(image)))
}

/// RGBA layers, bottom to top.
#[derive(Debug, Clone)]
pub struct LayersValue(pub Layers);

impl Payload for LayersValue {
    fn size_bytes(&self) -> u64 {
        self.0.iter().map(|l| l.image.as_raw().len() as u64).sum()
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.0.width_px().to_le_bytes());
        bytes.extend_from_slice(&self.0.height_px().to_le_bytes());
        bytes.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for layer in self.0.iter() {
            bytes.extend_from_slice(&(layer.name.len() as u32).to_le_bytes());
            bytes.extend_from_slice(layer.name.as_bytes());
            bytes.extend_from_slice(layer.image.as_raw());
        }
        Some(bytes)
    }
}

pub(crate) fn decode_layers(bytes: &[u8]) -> Result<Arc<dyn Payload>, String> {
    let truncated = || "truncated layers entry".to_owned();
    let (width, rest) = split_u32(bytes).ok_or_else(truncated)?;
    let (height, rest) = split_u32(rest).ok_or_else(truncated)?;
    let (count, mut rest) = split_u32(rest).ok_or_else(truncated)?;
    let layer_bytes = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(truncated)?;
    let mut layers = Layers::new(width, height);
    for _ in 0..count {
        let (name_len, after) = split_u32(rest).ok_or_else(truncated)?;
        let (name, after) = after
            .split_at_checked(name_len as usize)
            .ok_or_else(truncated)?;
        let (pixels, after) = after.split_at_checked(layer_bytes).ok_or_else(truncated)?;
        let name = std::str::from_utf8(name).map_err(|e| e.to_string())?;
        let image = RgbaImage::from_raw(width, height, pixels.to_vec()).ok_or_else(truncated)?;
        layers.push(name, image).map_err(|e| e.to_string())?;
        rest = after;
    }
    if !rest.is_empty() {
        return Err("trailing bytes in layers entry".to_owned());
    }
    Ok(Arc::new(LayersValue(layers)))
}

/// A denoising model: the loaded bundle it came from (for its scheduler and defaults) and the
/// transformer to run, possibly with another attention backend or compiled for a size.
#[derive(Debug, Clone)]
pub struct ModelValue {
    /// The bundle the weights came from.
    pub bundle: Arc<Bundle>,
    /// The transformer to sample with.
    pub transformer: Flux2Transformer,
    /// Bytes of weights (shared with the bundle).
    pub weight_bytes: u64,
    /// (width, height) Sample uses when given none: the size Compile prepared for, else the
    /// VAE's `sample_size` on both sides.
    pub default_size_px: (usize, usize),
    /// Set when the transformer is offloaded: its weights stay in RAM and Sample moves them to
    /// this device for the duration of sampling (Load's `offload` input).
    pub offload_to: Option<Device>,
    /// Compile settings recorded for an offloaded transformer; Sample compiles the device copy.
    pub compile_on_device: Option<CompileOptions>,
    /// The transformer's key in the run's memory plan, when Load loaded it for the planner:
    /// Sample places it with the plan's resident layers and streams the rest.
    pub part_key: Option<String>,
}

impl Payload for ModelValue {
    fn size_bytes(&self) -> u64 {
        self.weight_bytes
    }
}

/// A text encoder (part of a loaded bundle).
#[derive(Debug, Clone)]
pub struct TextEncoderValue {
    /// The bundle the encoder came from.
    pub bundle: Arc<Bundle>,
    /// Set when the encoder's weights stay in RAM: Encode moves a copy to this device for the
    /// prompt and drops it afterwards.
    pub offload_to: Option<Device>,
    /// The encoder's key in the run's memory plan (see [`ModelValue::part_key`]).
    pub part_key: Option<String>,
}

impl Payload for TextEncoderValue {
    fn size_bytes(&self) -> u64 {
        0
    }
}

/// A VAE (part of a loaded bundle).
#[derive(Debug, Clone)]
pub struct VaeValue(pub Arc<Bundle>);

impl Payload for VaeValue {
    fn size_bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_images_and_layers_round_trip_through_their_encoding() {
        let tensor = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let bytes = TensorValue(tensor.clone()).encode().unwrap();
        let back = decode_tensor(&bytes).unwrap();
        let back = (back.as_ref() as &dyn std::any::Any)
            .downcast_ref::<TensorValue>()
            .unwrap();
        assert_eq!(back.0.dims(), &[2, 3, 4]);
        assert_eq!(
            back.0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(decode_tensor(&bytes[..bytes.len() - 1]).is_err());

        let image = RgbImage::from_fn(3, 2, |x, y| veetance_imaging::Rgb([x as u8, y as u8, 7]));
        let bytes = ImageValue(image.clone()).encode().unwrap();
        let back = decode_image(&bytes).unwrap();
        let back = (back.as_ref() as &dyn std::any::Any)
            .downcast_ref::<ImageValue>()
            .unwrap();
        assert_eq!(back.0, image);

        let mut layers = Layers::new(2, 2);
        layers.push("background", RgbaImage::new(2, 2)).unwrap();
        layers
            .push(
                "object 1",
                RgbaImage::from_pixel(2, 2, veetance_imaging::Rgba([1, 2, 3, 4])),
            )
            .unwrap();
        let bytes = LayersValue(layers.clone()).encode().unwrap();
        let back = decode_layers(&bytes).unwrap();
        let back = (back.as_ref() as &dyn std::any::Any)
            .downcast_ref::<LayersValue>()
            .unwrap();
        assert_eq!(back.0, layers);
        assert!(decode_layers(&bytes[..bytes.len() - 3]).is_err());
    }
}
