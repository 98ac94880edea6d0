//! The batch rule, a pure function of the waiting inputs' lengths: which of them run together
//! in one forward pass, within the batch limits and without a batch that is mostly padding.
//! [`select_batch`] forms a batch around the oldest input; the scheduler
//! ([`super::schedule`]) picks another anchor and order through [`select_around`].

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most padded tokens in a batch (sequences x longest sequence).
    pub max_batch_tokens: usize,
    /// Most sequences in a batch.
    pub max_batch_size: usize,
}

/// Which waiting inputs form the next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Indices into the waiting inputs, ascending.
    pub indices: Vec<usize>,
    /// Sequences x longest sequence.
    pub padded_tokens: usize,
    /// No further input of any length could join.
    pub full: bool,
}

/// Chooses the next batch from the lengths of the waiting inputs, oldest first.
///
/// The oldest input always goes (so nothing starves, even one over the token budget); the others
/// are tried in order of how close their length is to it, and join when the batch stays within
/// both limits and no more than half of it would be padding.
pub fn select_batch(lengths: &[usize], limits: BatchLimits) -> Selection {
    select_around(0, lengths, limits, usize::MAX, |i, gap| (gap, i))
}

/// [`select_batch`] around any anchor: the input at `anchor` always goes, and the others, none
/// longer than `max_len`, are tried in the order of `rank(index, length gap to the anchor)`,
/// smallest first.
pub(crate) fn select_around<K: Ord>(
    anchor: usize,
    lengths: &[usize],
    limits: BatchLimits,
    max_len: usize,
    rank: impl Fn(usize, usize) -> K,
) -> Selection {
    let Some(&anchor_len) = lengths.get(anchor) else {
        return Selection {
            indices: Vec::new(),
            padded_tokens: 0,
            full: false,
        };
    };
    let mut candidates: Vec<usize> = (0..lengths.len())
        .filter(|&i| i != anchor && lengths[i] <= max_len)
        .collect();
    candidates.sort_by_cached_key(|&i| rank(i, lengths[i].abs_diff(anchor_len)));

    let mut indices = vec![anchor];
    let (mut longest, mut real) = (anchor_len, anchor_len);
    for i in candidates {
        if indices.len() >= limits.max_batch_size {
            break;
        }
        let len = lengths[i];
        let padded = (indices.len() + 1) * longest.max(len);
        if padded > limits.max_batch_tokens || padded > 2 * (real + len) {
            continue;
        }
        indices.push(i);
        longest = longest.max(len);
        real += len;
    }
    indices.sort_unstable();
    let padded_tokens = indices.len() * longest;
    let full = indices.len() >= limits.max_batch_size
        || (indices.len() + 1) * longest > limits.max_batch_tokens;
    Selection {
        indices,
        padded_tokens,
        full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_batch_tokens: 64,
        max_batch_size: 4,
    };

    #[test]
    fn empty_queue_gives_empty_batch() {
        let s = select_batch(&[], LIMITS);
        assert!(s.indices.is_empty());
        assert_eq!(s.padded_tokens, 0);
    }

    #[test]
    fn respects_max_batch_size() {
        let s = select_batch(&[4; 10], LIMITS);
        assert_eq!(s.indices, vec![0, 1, 2, 3]);
        assert_eq!(s.padded_tokens, 16);
        assert!(s.full);
    }

    #[test]
    fn counts_padding_against_the_token_budget() {
        // 20 + 20 + 20 = 60 padded tokens fit; a fourth would need 80.
        let s = select_batch(&[20, 20, 20, 20], LIMITS);
        assert_eq!(s.indices, vec![0, 1, 2]);
        assert_eq!(s.padded_tokens, 60);
        assert!(s.full);
        // A 30-token sequence next to a 20 costs 2 x 30 = 60, so a third 20 (90) does not fit.
        let s = select_batch(&[20, 30, 20], LIMITS);
        assert_eq!(s.indices, vec![0, 2]);
        assert_eq!(s.padded_tokens, 40);
    }

    #[test]
    fn oldest_always_goes_even_over_budget() {
        let s = select_batch(&[100, 2, 2], LIMITS);
        assert_eq!(s.indices, vec![0]);
        assert_eq!(s.padded_tokens, 100);
        assert!(s.full);
    }

    #[test]
    fn groups_similar_lengths() {
        // Oldest is 5 tokens: the other short ones join, the long ones wait.
        let lengths = [5, 30, 6, 31, 4, 5];
        let s = select_batch(
            &lengths,
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 4,
            },
        );
        assert_eq!(s.indices, vec![0, 2, 4, 5]);
        assert_eq!(s.padded_tokens, 24);
        // Then the long ones go together.
        let s = select_batch(&[30, 31], LIMITS);
        assert_eq!(s.indices, vec![0, 1]);
    }

    #[test]
    fn any_input_can_anchor_the_batch() {
        // Anchored on the 30-token input, the 31 joins before the short ones; ties go by rank.
        let s = select_around(1, &[5, 30, 6, 31, 29], LIMITS, usize::MAX, |i, gap| {
            (gap, i)
        });
        assert_eq!(s.indices, vec![1, 3]);
        let limits = BatchLimits {
            max_batch_tokens: 1000,
            max_batch_size: 3,
        };
        let s = select_around(1, &[5, 30, 6, 31, 29], limits, usize::MAX, |i, gap| {
            (gap, i)
        });
        assert_eq!(s.indices, vec![1, 3, 4]);
        assert_eq!(s.padded_tokens, 93);
        // Capped at 30 tokens, the 31 stays out and a shorter one comes in.
        let s = select_around(1, &[5, 30, 6, 31, 29], limits, 30, |i, gap| (gap, i));
        assert_eq!(s.indices, vec![1, 2, 4]);
        // A rank that prefers late indices among equal gaps.
        let s = select_around(
            0,
            &[30, 31, 29],
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 2,
            },
            usize::MAX,
            |i, gap| (gap, usize::MAX - i),
        );
        assert_eq!(s.indices, vec![0, 2]);
    }

    #[test]
    fn refuses_batches_that_are_mostly_padding() {
        let s = select_batch(
            &[2, 2, 2, 60],
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 8,
            },
        );
        assert_eq!(s.indices, vec![0, 1, 2]);
        assert!(!s.full);
    }
}
