//! The FLUX.2 VAE (`AutoencoderKLFlux2`, Black Forest Labs): a KL autoencoder with 32 latent
//! channels, 2×2 patchify into 128 channels, and BatchNorm running-statistics normalisation.
//!
//! - Reference: diffusers `diffusers/models/autoencoders/autoencoder_kl_flux2.py` (0.42.1);
//!   BFL `flux2/src/flux2/autoencoder.py`.
//! - Weights: the `vae/` folder of the FLUX.2 \[klein\] repositories, BFL's `ae.safetensors`,
//!   ComfyUI's `vae/flux2-vae.safetensors`.
//!
//! Files: [`config`] (hyper-parameters, inference from shapes), [`keys`] (diffusers and BFL
//! names), [`model`] (weights, encode, decode, tiled decode).

pub mod config;
pub mod keys;
pub mod model;

pub use config::{VaeConfig, infer_vae_config};
pub use keys::VaeLayout;
pub use model::Vae;
