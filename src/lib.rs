//! aft-serve: an HTTP inference service for Attention Free Transformer models.
//!
//! [`app`] is the composition root: from the [`config::Config`] it loads the bundle, tokenizer,
//! device and backend, starts the core, wraps it in the service, and hands the finished objects
//! to the server. Below it, layers from the outside in, each knowing only the ones beneath it:
//! - [`server`]: HTTP (axum): routes, auth, request ids, metrics, OpenAPI, listening, shutdown;
//!   maps [`service::ServiceError`] to the API's error shape;
//! - [`service`]: request semantics: validation, tokenization, normalisation, top-k;
//! - [`core`]: bounded queue, dynamic batcher and inference workers over a [`core::Backend`];
//! - [`backend`]: the TorchScript model through tch, a [`core::Backend`] that only [`app`] names.
//!
//! Shared below them all: [`bundle`], [`tokenize`], [`metrics`], [`config`], [`telemetry`];
//! [`memory`] gives freed heap memory back to the system while the process runs.
//!
//! For in-process use (benchmarks): [`bundle::Bundle::load`], [`tokenize::TextTokenizer`],
//! [`core::select_batch`], [`backend::torch::TorchFactory`] and [`backend::torch::TorchBackend`]
//! (a [`core::Backend`]), and [`core::Infer`].

pub mod app;
pub mod backend;
pub mod bundle;
pub mod config;
pub mod core;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tokenize;
