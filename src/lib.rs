//! aft-serve: an HTTP inference service for Attention Free Transformer models.
//!
//! Layers, from the outside in (each knows only the one below it):
//! - [`server`]: HTTP (axum): routes, auth, request ids, metrics, OpenAPI, shutdown;
//! - [`service`]: request semantics: validation, tokenization, normalisation, top-k;
//! - [`core`]: bounded queue, dynamic batcher and inference workers over a [`core::Backend`];
//! - [`backend`]: the TorchScript model through tch.
//!
//! For in-process use (benchmarks): [`bundle::Bundle::load`], [`tokenize::TextTokenizer`],
//! [`backend::torch::TorchBackend`] (a [`core::Backend`]) and [`core::Infer`].

pub mod backend;
pub mod bundle;
pub mod config;
pub mod core;
pub mod error;
pub mod metrics;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tokenize;
