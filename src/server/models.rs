//! The models one server answers for: each with its own service (workers, queue, tokenizer), found
//! by the name a request gives in `model`; the first is the default for requests that give none.

use super::info::ModelInfo;
use crate::service::{Service, ServiceError};

/// One model as the API serves it: the service that answers for it, and its part of `/info`.
pub struct ServedModel {
    pub service: Service,
    pub info: ModelInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelsError {
    #[error("no model to serve")]
    Empty,
    #[error("two models are named {0:?}; serve one under another name with --model-dir NAME=DIR")]
    DuplicateName(String),
}

/// The served models, in the order given; never empty, names unique.
pub struct ServedModels {
    models: Vec<ServedModel>,
}

impl ServedModels {
    pub fn new(models: Vec<ServedModel>) -> Result<Self, ModelsError> {
        if models.is_empty() {
            return Err(ModelsError::Empty);
        }
        for (i, model) in models.iter().enumerate() {
            let name = &model.service.model_name;
            if models[..i].iter().any(|m| m.service.model_name == *name) {
                return Err(ModelsError::DuplicateName(name.clone()));
            }
        }
        Ok(Self { models })
    }

    /// The model for requests that name none: the first one given.
    pub fn default_model(&self) -> &ServedModel {
        &self.models[0]
    }

    /// The model a request names, or the default when it names none; an unknown name is
    /// [`ServiceError::ModelNotFound`].
    pub fn get(&self, name: Option<&str>) -> Result<&ServedModel, ServiceError> {
        match name {
            None => Ok(self.default_model()),
            Some(name) => self
                .models
                .iter()
                .find(|m| m.service.model_name == name)
                .ok_or_else(|| ServiceError::ModelNotFound(name.to_owned())),
        }
    }

    /// Every model, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.iter()
    }

    pub fn infos(&self) -> Vec<ModelInfo> {
        self.iter().map(|m| m.info.clone()).collect()
    }

    /// `Ok` when every model is loaded and warm in every worker; otherwise the first reason
    /// why not, naming the model.
    pub fn readiness(&self) -> Result<(), ServiceError> {
        for model in self.iter() {
            model.service.readiness().map_err(|err| match err {
                ServiceError::NotReady(reason) => ServiceError::NotReady(format!(
                    "model {:?}: {reason}",
                    model.service.model_name
                )),
                other => other,
            })?;
        }
        Ok(())
    }
}
