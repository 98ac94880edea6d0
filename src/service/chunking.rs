//! Late chunking: where a document's chunks lie. The model runs once over the whole document;
//! each chunk's vector is pooled from that pass's token states over the chunk's tokens, so it
//! carries the context of the whole document (see `Backend::forward_spans`).

use crate::core::TokenSpan;
use crate::tokenize::TextTokens;

use super::error::ServiceError;

/// `chunking` of an embed request: windows of `tokens` text tokens, each sharing `overlap`
/// tokens with the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub tokens: usize,
    pub overlap: usize,
}

impl Chunking {
    /// Checks the parameters; the error names the one at fault.
    pub fn validate(self) -> Result<Self, ServiceError> {
        if self.tokens == 0 {
            return Err(ServiceError::invalid(
                "chunking.tokens",
                "chunking.tokens must be at least 1",
            ));
        }
        if self.overlap >= self.tokens {
            return Err(ServiceError::invalid(
                "chunking.overlap",
                format!(
                    "chunking.overlap ({}) must be less than chunking.tokens ({})",
                    self.overlap, self.tokens
                ),
            ));
        }
        Ok(self)
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    /// Token positions in the document's sequence (special tokens count).
    pub tokens: TokenSpan,
    /// Characters `[start, end)` of the text, in Unicode code points.
    pub chars: (usize, usize),
}

/// The chunks of one tokenized text: windows over its text tokens (special tokens belong to no
/// chunk), `chunking.tokens` long, each starting `tokens - overlap` after the one before, the
/// last ending at the last text token. A text with no text token has no chunk.
pub fn chunk_spans(text: &TextTokens, chunking: Chunking) -> Vec<ChunkSpan> {
    let content: Vec<usize> = (0..text.ids.len())
        .filter(|&i| !text.special.get(i).copied().unwrap_or(false))
        .collect();
    let step = chunking.tokens.saturating_sub(chunking.overlap).max(1);
    let mut spans = Vec::new();
    let mut first = 0;
    while first < content.len() {
        let last = (first + chunking.tokens).min(content.len()) - 1;
        let (start_tok, end_tok) = (content[first], content[last]);
        let chars = (
            text.offsets.get(start_tok).map_or(0, |o| o.0),
            text.offsets.get(end_tok).map_or(0, |o| o.1),
        );
        spans.push(ChunkSpan {
            tokens: TokenSpan {
                start: start_tok,
                end: end_tok + 1,
            },
            chars,
        });
        if last + 1 >= content.len() {
            break;
        }
        first += step;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[CLS] w0 .. w(n-1) [SEP]`, word i at characters [2i, 2i + 1).
    fn doc(words: usize) -> TextTokens {
        let mut offsets = vec![(0, 0)];
        offsets.extend((0..words).map(|i| (2 * i, 2 * i + 1)));
        offsets.push((0, 0));
        let mut special = vec![true];
        special.extend(std::iter::repeat_n(false, words));
        special.push(true);
        TextTokens {
            ids: vec![1; words + 2],
            offsets,
            special,
        }
    }

    fn token_ranges(spans: &[ChunkSpan]) -> Vec<(usize, usize)> {
        spans
            .iter()
            .map(|s| (s.tokens.start, s.tokens.end))
            .collect()
    }

    #[test]
    fn windows_overlap_and_the_last_ends_at_the_last_text_token() {
        let c = Chunking {
            tokens: 4,
            overlap: 1,
        };
        let spans = chunk_spans(&doc(10), c);
        // Text tokens are positions 1..=10; windows of 4 every 3.
        assert_eq!(token_ranges(&spans), vec![(1, 5), (4, 8), (7, 11)]);
        assert_eq!(spans[0].chars, (0, 7));
        assert_eq!(spans[2].chars, (12, 19));
    }

    #[test]
    fn a_short_text_is_one_chunk_and_no_text_is_none() {
        let c = Chunking {
            tokens: 256,
            overlap: 32,
        };
        assert_eq!(token_ranges(&chunk_spans(&doc(3), c)), vec![(1, 4)]);
        assert!(chunk_spans(&doc(0), c).is_empty());
        // No overlap: the windows tile the text.
        let tile = Chunking {
            tokens: 2,
            overlap: 0,
        };
        assert_eq!(
            token_ranges(&chunk_spans(&doc(5), tile)),
            vec![(1, 3), (3, 5), (5, 6)]
        );
    }

    #[test]
    fn parameters_are_validated_with_their_names() {
        let err = |tokens, overlap| match (Chunking { tokens, overlap }).validate() {
            Err(ServiceError::InvalidInput { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(0, 0), "chunking.tokens");
        assert_eq!(err(8, 8), "chunking.overlap");
        assert!(Chunking {
            tokens: 8,
            overlap: 7
        }
        .validate()
        .is_ok());
    }
}
