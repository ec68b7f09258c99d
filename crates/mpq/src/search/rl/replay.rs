//! HAQ (Wang et al., CVPR 2019) replay memory: a fixed-capacity ring buffer of transitions
//! that overwrites the oldest entry when full, sampled uniformly (without replacement when it
//! holds at least a batch; docs/algorithms.md §4.7).
//!
//! The reference (keras-rl `SequentialMemory`, window 1) stores `(s, a, r, done)` and reads
//! the successor state from the next entry, appending a dummy entry after each episode. Here
//! every transition stores its successor explicitly, which gives the learner the same tuples
//! without the dummy entry or the "resample if the previous entry is terminal" rule.

use rand::Rng;
use rand::seq::index;

/// One `(s, a, r, s', done)` transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The observation the action was taken in.
    pub state: Vec<f32>,
    /// The action, in `[0, 1]`.
    pub action: f32,
    /// The reward (in HAQ, the episode's final reward).
    pub reward: f64,
    /// The next observation.
    pub next_state: Vec<f32>,
    /// Whether the episode ended with this transition (no bootstrap from `next_state`).
    pub done: bool,
}

/// A ring buffer of at most `capacity` transitions.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    items: Vec<Transition>,
    capacity: usize,
    /// Index of the oldest entry once full (where the next push goes).
    head: usize,
}

impl ReplayBuffer {
    /// An empty buffer; `capacity` is raised to 1 if 0.
    pub fn new(capacity: usize) -> Self {
        ReplayBuffer {
            items: Vec::new(),
            capacity: capacity.max(1),
            head: 0,
        }
    }

    /// The most entries held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends `t`, overwriting the oldest entry when full.
    pub fn push(&mut self, t: Transition) {
        if self.items.len() < self.capacity {
            self.items.push(t);
        } else {
            self.items[self.head] = t;
            self.head = (self.head + 1) % self.capacity;
        }
    }

    /// The stored entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Transition> {
        let (new, old) = self.items.split_at(self.head);
        old.iter().chain(new)
    }

    /// `batch` entries drawn uniformly: without replacement when at least `batch` are stored,
    /// with replacement otherwise. Empty when the buffer is empty.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, batch: usize) -> Vec<&Transition> {
        let n = self.items.len();
        if n == 0 {
            return Vec::new();
        }
        if n >= batch {
            index::sample(rng, n, batch)
                .into_iter()
                .map(|i| &self.items[i])
                .collect()
        } else {
            (0..batch)
                .map(|_| &self.items[rng.random_range(0..n)])
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn t(i: usize) -> Transition {
        Transition {
            state: vec![i as f32],
            action: 0.5,
            reward: i as f64,
            next_state: vec![i as f32 + 1.0],
            done: false,
        }
    }

    #[test]
    fn ring_buffer_wraps_and_samples_only_stored_entries() {
        let mut b = ReplayBuffer::new(5);
        for i in 0..12 {
            b.push(t(i));
            assert_eq!(b.len(), (i + 1).min(5));
        }
        let held: Vec<f64> = b.iter().map(|x| x.reward).collect();
        assert_eq!(held, vec![7.0, 8.0, 9.0, 10.0, 11.0]);

        let draw = |seed: u64, k: usize| -> Vec<f64> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            b.sample(&mut rng, k).iter().map(|x| x.reward).collect()
        };
        for seed in 0..20 {
            // Without replacement: distinct stored entries.
            let s = draw(seed, 4);
            assert_eq!(s.len(), 4);
            assert!(s.iter().all(|r| held.contains(r)));
            let mut d = s.clone();
            d.sort_by(f64::total_cmp);
            d.dedup();
            assert_eq!(d.len(), 4);
            // With replacement when the batch exceeds the contents.
            let s = draw(seed, 64);
            assert_eq!(s.len(), 64);
            assert!(s.iter().all(|r| held.contains(r)));
        }
        assert_eq!(draw(9, 64), draw(9, 64), "seeded");
        assert!(
            ReplayBuffer::new(3)
                .sample(&mut ChaCha8Rng::seed_from_u64(0), 4)
                .is_empty()
        );
    }
}
