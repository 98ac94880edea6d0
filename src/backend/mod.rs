//! Backends that run the model. Only torch (TorchScript through tch) for now; the core sees them
//! through [`crate::core::Backend`].

pub mod threads;
pub mod torch;
