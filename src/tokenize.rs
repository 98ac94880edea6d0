//! Tokenization with the bundle's `tokenizer.json`, run on blocking threads so it never stalls the
//! async runtime. Texts longer than the model's limit are truncated or refused; pre-tokenized
//! inputs are range-checked and passed through as they are.

use std::path::Path;
use std::sync::Arc;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bundle::Bundle;
use tokio::sync::Semaphore;

/// One input to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    /// Pre-tokenized: sent to the model verbatim (special tokens are the client's business).
    Ids(Vec<i64>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenizeError {
    #[error("inputs[{index}] has {tokens} tokens, more than the limit of {limit}")]
    TooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("inputs[{index}] is empty")]
    Empty { index: usize },
    #[error("inputs[{index}][{position}] = {id} is outside the vocabulary (0..{vocab_size})")]
    TokenIdOutOfRange {
        index: usize,
        position: usize,
        id: i64,
        vocab_size: usize,
    },
    #[error("{0}")]
    Tokenizer(String),
    #[error("the tokenizer pool is closed")]
    Closed,
}

/// Token ids of every input, and how many tokens they hold in all.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<Vec<u32>>,
    pub total_tokens: usize,
}

/// A text's tokens with where each came from, for late chunking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTokens {
    pub ids: Vec<u32>,
    /// Per token, its characters `[start, end)` in the text, counted in Unicode code points (as
    /// Python's `str` indexes); `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// Per token, whether the tokenizer added it (`[CLS]`, `[SEP]`, ...).
    pub special: Vec<bool>,
}

/// One token of a text as the tokenizer cut it (`/tokenize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPiece {
    pub id: u32,
    /// The token as the vocabulary writes it (`[CLS]`, `##ing`, ...).
    pub token: String,
    /// Whether the tokenizer added it (`[CLS]`, `[SEP]`, ...).
    pub special: bool,
    /// Its bytes `[start, end)` in the text (UTF-8); `(0, 0)` for special tokens.
    pub bytes: (usize, usize),
}

/// The bundle's tokenizer twice: once truncating at the model's limit, once not, so an over-long
/// input refused with `truncate=false` can be told its real length.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    truncating: Tokenizer,
    full: Tokenizer,
    max_len: usize,
    vocab_size: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. `vocab_size` bounds pre-tokenized ids (the model's embedding
    /// table); `None` uses the tokenizer's own vocabulary size.
    pub fn from_file(
        path: &Path,
        max_len: usize,
        vocab_size: Option<usize>,
    ) -> Result<Self, TokenizeError> {
        let mut full = Tokenizer::from_file(path)
            .map_err(|e| TokenizeError::Tokenizer(format!("{}: {e}", path.display())))?;
        // The service pads itself (per batch); the file's own settings must not interfere.
        full.with_padding(None);
        full.with_truncation(None)
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
        let mut truncating = full.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
        let vocab_size = vocab_size.unwrap_or_else(|| full.get_vocab_size(true));
        Ok(Self {
            truncating,
            full,
            max_len,
            vocab_size,
        })
    }

    /// The bundle's `tokenizer.json`, limited to the model's `max_seq_len`, token ids bounded by
    /// the model's vocabulary: the tokenizer the service runs for this bundle.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, TokenizeError> {
        let manifest = &bundle.manifest;
        Self::from_file(
            &bundle.tokenizer_path(),
            manifest.max_seq_len,
            manifest.vocab_size(),
        )
    }

    /// [`TextTokenizer::from_bundle`] with the limit lowered to `max_len` (the server's
    /// `--max-input-tokens`) where that is below the model's.
    pub fn from_bundle_limited(bundle: &Bundle, max_len: usize) -> Result<Self, TokenizeError> {
        let manifest = &bundle.manifest;
        Self::from_file(
            &bundle.tokenizer_path(),
            max_len.min(manifest.max_seq_len),
            manifest.vocab_size(),
        )
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids for one input; `index` is its position in the request, for error messages.
    pub fn encode(
        &self,
        index: usize,
        input: &Input,
        truncate: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        match input {
            Input::Text(text) => {
                if text.is_empty() {
                    return Err(TokenizeError::Empty { index });
                }
                let tokenizer = if truncate {
                    &self.truncating
                } else {
                    &self.full
                };
                let encoding = tokenizer
                    .encode_fast(text.as_str(), true)
                    .map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
                let ids = encoding.get_ids();
                self.check_encoded(index, ids)?;
                Ok(ids.to_vec())
            }
            Input::Ids(ids) => {
                if ids.is_empty() {
                    return Err(TokenizeError::Empty { index });
                }
                if ids.len() > self.max_len && !truncate {
                    return Err(TokenizeError::TooLong {
                        index,
                        tokens: ids.len(),
                        limit: self.max_len,
                    });
                }
                // Every id is checked, those truncated away too: an id outside the vocabulary
                // is a malformed input wherever it sits (and the API document says so).
                let mut checked = ids
                    .iter()
                    .enumerate()
                    .map(|(position, &id)| match u32::try_from(id) {
                        Ok(v) if (v as usize) < self.vocab_size => Ok(v),
                        _ => Err(TokenizeError::TokenIdOutOfRange {
                            index,
                            position,
                            id,
                            vocab_size: self.vocab_size,
                        }),
                    })
                    .collect::<Result<Vec<u32>, _>>()?;
                checked.truncate(self.max_len);
                Ok(checked)
            }
        }
    }

    /// A text's encoding is refused when longer than the limit (only possible without
    /// truncation) or empty (a text of nothing but characters the tokenizer drops).
    fn check_encoded(&self, index: usize, ids: &[u32]) -> Result<(), TokenizeError> {
        if ids.len() > self.max_len {
            return Err(TokenizeError::TooLong {
                index,
                tokens: ids.len(),
                limit: self.max_len,
            });
        }
        if ids.is_empty() {
            return Err(TokenizeError::Empty { index });
        }
        Ok(())
    }

    /// [`TextTokenizer::encode`] for a text, keeping each token's character offsets (slower
    /// than `encode`, which skips them).
    pub fn encode_with_offsets(
        &self,
        index: usize,
        text: &str,
        truncate: bool,
    ) -> Result<TextTokens, TokenizeError> {
        if text.is_empty() {
            return Err(TokenizeError::Empty { index });
        }
        let tokenizer = if truncate {
            &self.truncating
        } else {
            &self.full
        };
        let encoding = tokenizer
            .encode_char_offsets(text, true)
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids();
        self.check_encoded(index, ids)?;
        Ok(TextTokens {
            ids: ids.to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            special: encoding
                .get_special_tokens_mask()
                .iter()
                .map(|&m| m != 0)
                .collect(),
        })
    }

    /// How the (not truncating) tokenizer cuts `text`, with or without the special tokens it
    /// adds; for inspection (`/tokenize`), never for the model.
    pub fn pieces(&self, text: &str, add_special: bool) -> Result<Vec<TokenPiece>, TokenizeError> {
        let encoding = self
            .full
            .encode(text, add_special)
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_offsets())
            .map(|(((&id, token), &special), &bytes)| TokenPiece {
                id,
                token: token.clone(),
                special: special != 0,
                bytes,
            })
            .collect())
    }

    /// The text of token ids; `index` is the list's position in the request. Ids outside the
    /// vocabulary are refused, as they are for the model.
    pub fn decode(
        &self,
        index: usize,
        ids: &[i64],
        skip_special: bool,
    ) -> Result<String, TokenizeError> {
        let ids = ids
            .iter()
            .enumerate()
            .map(|(position, &id)| match u32::try_from(id) {
                Ok(v) if (v as usize) < self.vocab_size => Ok(v),
                _ => Err(TokenizeError::TokenIdOutOfRange {
                    index,
                    position,
                    id,
                    vocab_size: self.vocab_size,
                }),
            })
            .collect::<Result<Vec<u32>, _>>()?;
        self.full
            .decode(&ids, skip_special)
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))
    }

    /// Token ids for every input of a request, in order.
    pub fn encode_all(&self, inputs: &[Input], truncate: bool) -> Result<Tokenized, TokenizeError> {
        let ids = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| self.encode(i, input, truncate))
            .collect::<Result<Vec<_>, _>>()?;
        let total_tokens = ids.iter().map(Vec::len).sum();
        Ok(Tokenized { ids, total_tokens })
    }
}

/// Runs tokenization on the blocking thread pool, at most `threads` requests at a time.
#[derive(Clone)]
pub struct TokenizerPool {
    tokenizer: Arc<TextTokenizer>,
    permits: Arc<Semaphore>,
}

impl TokenizerPool {
    /// `threads == 0` uses one thread per CPU.
    pub fn new(tokenizer: TextTokenizer, threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        Self {
            tokenizer: Arc::new(tokenizer),
            permits: Arc::new(Semaphore::new(threads)),
        }
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub async fn encode_all(
        &self,
        inputs: Vec<Input>,
        truncate: bool,
    ) -> Result<Tokenized, TokenizeError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TokenizeError::Closed)?;
        let tokenizer = self.tokenizer.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            tokenizer.encode_all(&inputs, truncate)
        })
        .await
        .map_err(|e| TokenizeError::Tokenizer(format!("tokenization task failed: {e}")))?
    }

    /// Runs `work` with the tokenizer on the blocking pool, within the pool's bound.
    async fn on_pool<T, F>(&self, work: F) -> Result<T, TokenizeError>
    where
        T: Send + 'static,
        F: FnOnce(&TextTokenizer) -> Result<T, TokenizeError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TokenizeError::Closed)?;
        let tokenizer = self.tokenizer.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&tokenizer)
        })
        .await
        .map_err(|e| TokenizeError::Tokenizer(format!("tokenization task failed: {e}")))?
    }

    /// [`TextTokenizer::pieces`] for every text of a request, in order.
    pub async fn pieces(
        &self,
        texts: Vec<String>,
        add_special: bool,
    ) -> Result<Vec<Vec<TokenPiece>>, TokenizeError> {
        self.on_pool(move |t| {
            texts
                .iter()
                .map(|text| t.pieces(text, add_special))
                .collect()
        })
        .await
    }

    /// [`TextTokenizer::decode`] for every id list of a request, in order.
    pub async fn decode(
        &self,
        ids: Vec<Vec<i64>>,
        skip_special: bool,
    ) -> Result<Vec<String>, TokenizeError> {
        self.on_pool(move |t| {
            ids.iter()
                .enumerate()
                .map(|(i, ids)| t.decode(i, ids, skip_special))
                .collect()
        })
        .await
    }

    /// [`TextTokenizer::encode_with_offsets`] for every text of a request, in order.
    pub async fn encode_texts_with_offsets(
        &self,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<Vec<TextTokens>, TokenizeError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TokenizeError::Closed)?;
        let tokenizer = self.tokenizer.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| tokenizer.encode_with_offsets(i, text, truncate))
                .collect()
        })
        .await
        .map_err(|e| TokenizeError::Tokenizer(format!("tokenization task failed: {e}")))?
    }
}
