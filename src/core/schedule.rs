//! Which waiting inputs form the next batch, so that one request (or one API key) carrying a lot
//! of work cannot put all of it ahead of everyone else.
//!
//! Waiting inputs belong to *flows*: a request's inputs form one flow, or, when the caller has an
//! API key, all of that key's requests form one. Under [`Policy::Fair`] each input gets a virtual
//! finish tag when it arrives (self-clocked fair queueing, counted in tokens): `tag = max(clock,
//! previous tag of its flow) + tokens`, and the clock moves to the tag of each batch's anchor. The
//! anchor of the next batch is the input with the smallest tag in the most urgent priority class
//! that has work; the batch around it is then filled as [`select_batch`] always did, with the
//! inputs closest to it in length, more urgent classes and smaller tags first among equals, except
//! that no companion may be more than [`MAX_STRETCH`] times the anchor's length: a short request
//! picked for fairness runs in a short batch rather than padded to the long inputs of others (it
//! would otherwise pay for their length, and take the place of one of them). A request of 512
//! long inputs thus holds tags far into the future and a short request that arrives after it gets
//! the next turn, while equal flows share the worker in proportion to their tokens.
//!
//! Starvation guard: whenever [`OLDEST_TURN`] - 1 batches in a row have passed over the oldest
//! waiting input, the next batch is anchored on it, whatever its flow and class. So the oldest
//! input is always in one of the next [`OLDEST_TURN`] batches, and an input that arrives with `n`
//! older inputs still waiting leaves within `OLDEST_TURN x (n + 1)` batches.
//!
//! [`Policy::Fifo`] is the old behaviour (oldest input first, priority ignored), kept for
//! comparison.
//!
//! [`select_batch`]: super::select::select_batch

use std::collections::HashMap;

use super::caller::ClientId;
use super::queue::Entry;
use super::select::{select_around, BatchLimits, Selection};
use crate::config::Scheduling;

/// A batch is anchored on the oldest waiting input at least once in this many batches.
pub const OLDEST_TURN: u32 = 8;

/// Under [`Policy::Fair`], no input longer than this many times the anchor joins its batch.
pub const MAX_STRETCH: usize = 2;

/// How the batcher picks the input each batch is formed around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Fair queueing across requests (or API keys) by tokens, with priority classes.
    #[default]
    Fair,
    /// The oldest waiting input first, whoever sent it (the behaviour before fair scheduling).
    Fifo,
}

/// `--scheduling` names the policy; the configuration knows nothing of the core.
impl From<Scheduling> for Policy {
    fn from(s: Scheduling) -> Self {
        match s {
            Scheduling::Fair => Self::Fair,
            Scheduling::Fifo => Self::Fifo,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Request(u64),
    Client(ClientId),
}

/// Inputs of one source at one priority share a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Flow {
    rank: u8,
    source: Source,
}

#[derive(Debug, Default)]
struct FlowState {
    /// Tag of the flow's latest input.
    finish: u64,
    waiting: usize,
}

struct Waiting {
    entry: Entry,
    /// Arrival order.
    seq: u64,
    tag: u64,
    flow: Flow,
}

/// The next batch, taken out of the scheduler.
pub(crate) struct Batch {
    pub entries: Vec<Entry>,
    /// Sequences x longest sequence.
    pub padded_tokens: usize,
    /// The anchor was forced by the starvation guard.
    pub oldest_turn: bool,
}

/// The waiting inputs and the fairness state; owned by the batcher task.
pub(crate) struct Scheduler {
    policy: Policy,
    /// In arrival order, so the oldest is first.
    waiting: Vec<Waiting>,
    next_seq: u64,
    next_request: u64,
    /// Virtual time per priority class, in tokens.
    clock: [u64; 2],
    flows: HashMap<Flow, FlowState>,
    /// Batches in a row whose anchor was not the oldest waiting input.
    passed_over: u32,
}

/// The anchor and the batch around it, as indices into `waiting`.
struct Plan {
    anchor: usize,
    selection: Selection,
    oldest_turn: bool,
}

impl Scheduler {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            waiting: Vec::new(),
            next_seq: 0,
            next_request: 0,
            clock: [0; 2],
            flows: HashMap::new(),
            passed_over: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The input that has waited longest.
    pub fn oldest(&self) -> Option<&Entry> {
        self.waiting.first().map(|w| &w.entry)
    }

    /// Queues one request's inputs (they arrive together and share a caller).
    pub fn push_request(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let caller = first.caller;
        let rank = caller.priority.rank();
        let source = match caller.client {
            Some(client) => Source::Client(client),
            None => {
                self.next_request += 1;
                Source::Request(self.next_request)
            }
        };
        let flow = Flow { rank, source };
        let clock = self.clock[usize::from(rank)];
        let state = self.flows.entry(flow).or_default();
        let mut finish = state.finish.max(clock);
        state.waiting += entries.len();
        for entry in entries {
            finish += entry.ids.len().max(1) as u64;
            self.next_seq += 1;
            self.waiting.push(Waiting {
                entry,
                seq: self.next_seq,
                tag: finish,
                flow,
            });
        }
        state.finish = finish;
    }

    /// Removes the inputs whose requester went away, and returns them.
    pub fn drop_cancelled(&mut self) -> Vec<Entry> {
        if !self.waiting.iter().any(|w| w.entry.is_cancelled()) {
            return Vec::new();
        }
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.entry.is_cancelled());
        self.waiting = kept;
        self.leave(gone)
    }

    /// Empties the scheduler (shutdown).
    pub fn drain(&mut self) -> Vec<Entry> {
        let all = std::mem::take(&mut self.waiting);
        self.leave(all)
    }

    /// Whether the next batch is already as full as the limits allow.
    pub fn next_is_full(&self, limits: BatchLimits) -> bool {
        self.plan(limits).is_some_and(|p| p.selection.full)
    }

    /// Takes the next batch; `None` when nothing waits.
    pub fn take(&mut self, limits: BatchLimits) -> Option<Batch> {
        let plan = self.plan(limits)?;
        let anchor_tag = self.waiting[plan.anchor].tag;
        let anchor_rank = self.waiting[plan.anchor].flow.rank;
        let mut chosen = plan.selection.indices.iter().copied().peekable();
        let mut taken = Vec::with_capacity(plan.selection.indices.len());
        let mut rest = Vec::with_capacity(self.waiting.len() - plan.selection.indices.len());
        for (i, w) in std::mem::take(&mut self.waiting).into_iter().enumerate() {
            if chosen.peek() == Some(&i) {
                chosen.next();
                taken.push(w);
            } else {
                rest.push(w);
            }
        }
        self.waiting = rest;
        if plan.anchor == 0 {
            self.passed_over = 0;
        } else {
            self.passed_over += 1;
        }
        // The clock follows fair turns only: a forced turn serves an input out of fair order.
        if !plan.oldest_turn {
            let clock = &mut self.clock[usize::from(anchor_rank)];
            *clock = (*clock).max(anchor_tag);
        }
        let entries = self.leave(taken);
        Some(Batch {
            entries,
            padded_tokens: plan.selection.padded_tokens,
            oldest_turn: plan.oldest_turn,
        })
    }

    fn plan(&self, limits: BatchLimits) -> Option<Plan> {
        if self.waiting.is_empty() {
            return None;
        }
        let lengths: Vec<usize> = self.waiting.iter().map(|w| w.entry.ids.len()).collect();
        let (anchor, oldest_turn) = match self.policy {
            Policy::Fifo => (0, false),
            Policy::Fair => {
                let (fair, _) = self
                    .waiting
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| (w.flow.rank, w.tag, w.seq))?;
                if fair != 0 && self.passed_over + 1 >= OLDEST_TURN {
                    (0, true)
                } else {
                    (fair, false)
                }
            }
        };
        let selection = match self.policy {
            Policy::Fifo => select_around(anchor, &lengths, limits, usize::MAX, |i, gap| {
                (0, gap, 0, self.waiting[i].seq)
            }),
            Policy::Fair => {
                let max_len = lengths[anchor].saturating_mul(MAX_STRETCH);
                select_around(anchor, &lengths, limits, max_len, |i, gap| {
                    let w = &self.waiting[i];
                    (w.flow.rank, gap, w.tag, w.seq)
                })
            }
        };
        Some(Plan {
            anchor,
            selection,
            oldest_turn,
        })
    }

    /// Book-keeping for inputs leaving the queue; forgets flows that can no longer matter.
    fn leave(&mut self, gone: Vec<Waiting>) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(gone.len());
        for w in gone {
            if let Some(state) = self.flows.get_mut(&w.flow) {
                state.waiting -= 1;
                // A request never comes back; a key does, and keeps its place in virtual time
                // until the clock catches up with it.
                let done = state.waiting == 0
                    && match w.flow.source {
                        Source::Request(_) => true,
                        Source::Client(_) => state.finish <= self.clock[usize::from(w.flow.rank)],
                    };
                if done {
                    self.flows.remove(&w.flow);
                }
            }
            entries.push(w.entry);
        }
        if self.waiting.is_empty() {
            self.passed_over = 0;
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::core::{Caller, Priority};

    const LIMITS: BatchLimits = BatchLimits {
        max_batch_tokens: 64,
        max_batch_size: 4,
    };

    /// A request's inputs; the first token of each input identifies it.
    fn request(caller: Caller, ids: &[(u32, usize)]) -> Vec<Entry> {
        ids.iter()
            .map(|&(id, len)| {
                let mut seq = vec![id];
                seq.resize(len, 1);
                let (reply, rx) = tokio::sync::oneshot::channel();
                // Keep the receiver alive: a closed channel reads as a cancelled request.
                std::mem::forget(rx);
                Entry {
                    ids: seq,
                    spans: Vec::new(),
                    enqueued: Instant::now(),
                    reply,
                    caller,
                }
            })
            .collect()
    }

    fn ids(batch: &Batch) -> Vec<u32> {
        batch.entries.iter().map(|e| e.ids[0]).collect()
    }

    fn low() -> Caller {
        Caller {
            priority: Priority::Low,
            client: None,
        }
    }

    fn key(n: u64) -> Caller {
        Caller {
            priority: Priority::Normal,
            client: Some(ClientId(n)),
        }
    }

    #[test]
    fn a_short_request_goes_before_the_rest_of_a_heavy_one() {
        let mut s = Scheduler::new(Policy::Fair);
        // 40 inputs of 16 tokens: 10 batches of 4.
        s.push_request(request(
            Caller::default(),
            &(0..40).map(|i| (i, 16)).collect::<Vec<_>>(),
        ));
        assert_eq!(ids(&s.take(LIMITS).unwrap()), vec![0, 1, 2, 3]);
        s.push_request(request(Caller::default(), &[(100, 16)]));
        let next = s.take(LIMITS).unwrap();
        assert!(ids(&next).contains(&100), "{:?}", ids(&next));

        let mut fifo = Scheduler::new(Policy::Fifo);
        fifo.push_request(request(
            Caller::default(),
            &(0..40).map(|i| (i, 16)).collect::<Vec<_>>(),
        ));
        fifo.take(LIMITS);
        fifo.push_request(request(Caller::default(), &[(100, 16)]));
        let mut batches = 0;
        while let Some(b) = fifo.take(LIMITS) {
            batches += 1;
            if ids(&b).contains(&100) {
                break;
            }
        }
        assert_eq!(batches, 10, "FIFO serves it after all 36 older inputs");
    }

    #[test]
    fn a_short_anchor_is_not_padded_to_long_companions() {
        let limits = BatchLimits {
            max_batch_tokens: 256,
            max_batch_size: 8,
        };
        let heavy: Vec<(u32, usize)> = (0..16).map(|i| (i, 64)).collect();
        let mut s = Scheduler::new(Policy::Fair);
        s.push_request(request(Caller::default(), &heavy));
        assert_eq!(ids(&s.take(limits).unwrap()), vec![0, 1, 2, 3]);
        s.push_request(request(Caller::default(), &[(100, 4)]));
        // Fair order picks the short request, and it runs alone rather than padded to 64.
        assert_eq!(ids(&s.take(limits).unwrap()), vec![100]);
        assert_eq!(ids(&s.take(limits).unwrap()), vec![4, 5, 6, 7]);
        // A long anchor still takes shorter companions, as select_batch does.
        let mut s = Scheduler::new(Policy::Fair);
        s.push_request(request(Caller::default(), &[(1, 40), (2, 30), (3, 90)]));
        assert_eq!(ids(&s.take(limits).unwrap()), vec![1, 2]);
    }

    #[test]
    fn equal_flows_share_the_worker_by_tokens() {
        let mut s = Scheduler::new(Policy::Fair);
        let limits = BatchLimits {
            max_batch_tokens: 1000,
            max_batch_size: 1,
        };
        // Flow A sends inputs of 10 tokens, flow B of 30: per token, they alternate 3:1.
        s.push_request(request(
            Caller::default(),
            &(0..30).map(|i| (i, 10)).collect::<Vec<_>>(),
        ));
        s.push_request(request(
            Caller::default(),
            &(100..110).map(|i| (i, 30)).collect::<Vec<_>>(),
        ));
        let order: Vec<u32> = (0..20).map(|_| ids(&s.take(limits).unwrap())[0]).collect();
        let a_tokens: usize = order.iter().filter(|&&i| i < 100).count() * 10;
        let b_tokens: usize = order.iter().filter(|&&i| i >= 100).count() * 30;
        assert!(
            a_tokens.abs_diff(b_tokens) <= 30,
            "A {a_tokens} tokens, B {b_tokens} tokens: {order:?}"
        );
    }

    #[test]
    fn requests_of_one_key_share_one_flow() {
        let mut s = Scheduler::new(Policy::Fair);
        let one = BatchLimits {
            max_batch_tokens: 1000,
            max_batch_size: 1,
        };
        // Key 1 sends two requests of 4 inputs; key 2 then sends one of 4.
        s.push_request(request(key(1), &[(1, 8), (2, 8), (3, 8), (4, 8)]));
        s.push_request(request(key(1), &[(5, 8), (6, 8), (7, 8), (8, 8)]));
        s.push_request(request(key(2), &[(21, 8), (22, 8), (23, 8), (24, 8)]));
        let order: Vec<u32> = (0..8).map(|_| ids(&s.take(one).unwrap())[0]).collect();
        // Key 2 alternates with key 1, rather than waiting for both of key 1's requests.
        assert_eq!(order, vec![1, 21, 2, 22, 3, 23, 4, 24]);
    }

    #[test]
    fn low_priority_yields_but_gets_the_oldest_turn() {
        let mut s = Scheduler::new(Policy::Fair);
        let one = BatchLimits {
            max_batch_tokens: 1000,
            max_batch_size: 1,
        };
        s.push_request(request(low(), &[(1, 8), (2, 8), (3, 8)]));
        for i in 0..20 {
            s.push_request(request(Caller::default(), &[(100 + i, 8)]));
        }
        let order: Vec<u32> = (0..23).map(|_| ids(&s.take(one).unwrap())[0]).collect();
        // 7 normal batches pass the oldest (low) input over, then it gets a batch; and so on.
        let low_at: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(_, &i)| i < 100)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(low_at, vec![7, 15, 22], "{order:?}");
        // FIFO ignores priority.
        let mut fifo = Scheduler::new(Policy::Fifo);
        fifo.push_request(request(low(), &[(1, 8)]));
        fifo.push_request(request(Caller::default(), &[(100, 8)]));
        assert_eq!(ids(&fifo.take(one).unwrap()), vec![1]);
    }

    #[test]
    fn companions_come_from_the_more_urgent_class_first() {
        let mut s = Scheduler::new(Policy::Fair);
        s.push_request(request(low(), &[(1, 8), (2, 8), (3, 8)]));
        s.push_request(request(Caller::default(), &[(10, 8), (11, 9), (12, 9)]));
        let batch = s.take(LIMITS).unwrap();
        // Anchor 10 (normal); the normal 9-token inputs join before the closer low 8-token ones.
        assert_eq!(ids(&batch), vec![1, 10, 11, 12]);
    }

    /// A small deterministic generator, so the property test needs no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % below
        }
    }

    #[test]
    fn every_input_leaves_within_the_stated_bound() {
        for seed in 1..=20u64 {
            let mut rng = Lcg(seed);
            let mut s = Scheduler::new(Policy::Fair);
            let limits = BatchLimits {
                max_batch_tokens: 256,
                max_batch_size: 8,
            };
            // Per input id: (batch count at arrival, older inputs waiting at arrival).
            let mut admitted: HashMap<u32, (u64, usize)> = HashMap::new();
            let mut next_id = 0u32;
            let mut batches = 0u64;
            let mut oldest_since: Option<(u32, u64)> = None;
            for _ in 0..600 {
                // A burst of arrivals: some heavy, many short, some low priority, some keyed.
                for _ in 0..rng.next(4) {
                    let heavy = rng.next(10) == 0;
                    let count = if heavy {
                        20 + rng.next(40)
                    } else {
                        1 + rng.next(3)
                    };
                    let caller = Caller {
                        priority: if rng.next(4) == 0 {
                            Priority::Low
                        } else {
                            Priority::Normal
                        },
                        client: (rng.next(2) == 0).then(|| ClientId(rng.next(3))),
                    };
                    let inputs: Vec<(u32, usize)> = (0..count)
                        .map(|_| {
                            next_id += 1;
                            let len = if heavy { 64 } else { 2 + rng.next(30) as usize };
                            (next_id, len)
                        })
                        .collect();
                    for (i, &(id, _)) in inputs.iter().enumerate() {
                        admitted.insert(id, (batches, s.waiting.len() + i));
                    }
                    s.push_request(request(caller, &inputs));
                }
                let Some(batch) = s.take(limits) else {
                    continue;
                };
                batches += 1;
                for id in ids(&batch) {
                    let (at, older) = admitted.remove(&id).unwrap();
                    let waited = batches - at;
                    let bound = u64::from(OLDEST_TURN) * (older as u64 + 1);
                    assert!(
                        waited <= bound,
                        "seed {seed}: input {id} waited {waited} batches, bound {bound}"
                    );
                }
                // The oldest input is always within OLDEST_TURN batches of leaving.
                let oldest = s.oldest().map(|e| e.ids[0]);
                match (oldest, oldest_since) {
                    (Some(id), Some((was, since))) if id == was => assert!(
                        batches - since < u64::from(OLDEST_TURN),
                        "seed {seed}: input {id} oldest since batch {since}, now {batches}"
                    ),
                    (Some(id), _) => oldest_since = Some((id, batches)),
                    (None, _) => oldest_since = None,
                }
            }
        }
    }
}
