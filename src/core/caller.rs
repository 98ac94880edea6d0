//! Who sent a request, as the core sees it: its priority class and, when API keys are
//! configured, the key's fingerprint. The queue counts work per caller and the scheduler orders
//! it by caller; neither decides what a caller is.

/// How urgent a request is. It can only be lowered: priority is the caller's own word, so there is
/// no level above the default that would let one client push ahead of all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    #[default]
    Normal,
    /// Bulk work: yields to normal work, but still gets the oldest input's turn (see
    /// [`super::schedule::OLDEST_TURN`]).
    Low,
}

impl Priority {
    pub const ALL: [Priority; 2] = [Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Position in service order: the lower, the sooner.
    pub(super) fn rank(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::Low => 1,
        }
    }
}

/// An API key, by its fingerprint: the first 8 bytes of the key's SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }

    /// The first 8 hex digits of the key's SHA-256 (`printf %s KEY | sha256sum | cut -c1-8`):
    /// enough to tell keys apart on a dashboard, nothing that helps recover a key.
    pub fn label(self) -> String {
        format!("{:08x}", self.0 >> 32)
    }
}

/// Who sent a request and how urgent it is; decides where its inputs queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    pub priority: Priority,
    /// The caller's API key, when keys are configured: fairness is then between keys, and the
    /// per-key queue limit applies.
    pub client: Option<ClientId>,
}
