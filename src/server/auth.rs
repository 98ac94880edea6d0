//! Optional API keys, checked as `Authorization: Bearer <key>`. Keys are kept only as sha256
//! digests and compared in constant time against all of them, so neither timing nor logs reveal
//! them.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::core::ClientId;

#[derive(Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keys from the command line plus those in `file` (one per line; blanks and `#` comments
    /// skipped).
    pub fn load(keys: &[String], file: Option<&Path>) -> Result<Self, String> {
        let mut all: Vec<String> = keys.iter().map(|k| k.trim().to_owned()).collect();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--api-key-file {}: {e}", file.display()))?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        all.retain(|k| !k.is_empty());
        Ok(Self {
            digests: all.iter().map(|k| digest(k)).collect(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys; looks at every key whatever the outcome.
    pub fn accepts(&self, presented: &str) -> bool {
        self.identify(presented).is_some()
    }

    /// The key's identity for scheduling and metrics when `presented` is one of the keys; looks
    /// at every key whatever the outcome.
    pub fn identify(&self, presented: &str) -> Option<ClientId> {
        let d = digest(presented);
        let mut ok = subtle::Choice::from(0);
        for key in &self.digests {
            ok |= key.ct_eq(&d);
        }
        bool::from(ok).then(|| ClientId::from_digest(&d))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Refuses requests without a valid key, when keys are configured; marks accepted requests with
/// their key's [`ClientId`], for fair scheduling and the per-key queue limit.
pub async fn require_api_key(
    State(keys): State<Arc<ApiKeys>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !keys.enabled() {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token.and_then(|t| keys.identify(t)) {
        Some(client) => {
            req.extensions_mut().insert(client);
            next.run(req).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let dir = std::env::temp_dir().join(format!("aft-keys-{}", std::process::id()));
        std::fs::write(&dir, "# comment\n\n  file-key  \n").unwrap();
        let keys = ApiKeys::load(&["cli-key".into(), "".into()], Some(&dir)).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts("cli-key"));
        assert!(keys.accepts("file-key"));
        assert!(!keys.accepts("cli-ke"));
        assert!(!keys.accepts(""));
        // The identity is the key's SHA-256 fingerprint: stable, distinct per key.
        let id = keys.identify("cli-key").unwrap();
        assert_eq!(id, keys.identify("cli-key").unwrap());
        assert_ne!(id, keys.identify("file-key").unwrap());
        assert_eq!(id.label(), &hex::encode(digest("cli-key"))[..8]);
        assert_eq!(keys.identify("cli-ke"), None);
        assert!(!ApiKeys::load(&[], None).unwrap().enabled());
        assert!(ApiKeys::load(&[], Some(Path::new("/nonexistent/keys"))).is_err());
    }
}
