//! Counter → rate: the one mechanism every collector uses.
//!
//! A [`Counter`] remembers the last value and when it was read (monotonic
//! clock). The first sight and a value that went down (a restart) give no
//! delta. [`StateMap`] keeps per-subject state (a container, an interface, a
//! disk) and drops what was not seen in the last cycle, so state for things
//! that vanished does not pile up.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The change of a counter between two reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    pub delta: u64,
    pub elapsed: Duration,
}

impl Delta {
    /// Increase per second of real elapsed time.
    pub fn per_sec(&self) -> f64 {
        self.delta as f64 / self.elapsed.as_secs_f64()
    }
}

/// Last value of one monotonic counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    last: Option<(u64, Instant)>,
}

impl Counter {
    /// Record `value` read at `at`; the delta since the previous read, if
    /// there was one, time moved forward and the counter did not go down.
    pub fn update(&mut self, value: u64, at: Instant) -> Option<Delta> {
        let (prev, prev_at) = self.last.replace((value, at))?;
        let elapsed = at.checked_duration_since(prev_at)?;
        if elapsed.is_zero() || value < prev {
            return None;
        }
        Some(Delta {
            delta: value - prev,
            elapsed,
        })
    }

    /// Like [`Counter::update`], but straight to a per-second rate.
    pub fn rate(&mut self, value: u64, at: Instant) -> Option<f64> {
        self.update(value, at).map(|d| d.per_sec())
    }
}

/// Per-subject state that lives as long as the subject is seen each cycle.
#[derive(Debug)]
pub struct StateMap<K, V> {
    map: HashMap<K, (V, u64)>,
    generation: u64,
}

impl<K, V> Default for StateMap<K, V> {
    fn default() -> Self {
        StateMap {
            map: HashMap::new(),
            generation: 0,
        }
    }
}

impl<K: Hash + Eq, V: Default> StateMap<K, V> {
    /// Start a cycle: what is not touched before [`StateMap::sweep`] goes.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    /// The state of `key`, created empty on first sight, marked as seen.
    pub fn touch(&mut self, key: K) -> &mut V {
        let generation = self.generation;
        let slot = self
            .map
            .entry(key)
            .or_insert_with(|| (V::default(), generation));
        slot.1 = generation;
        &mut slot.0
    }

    /// Like [`StateMap::touch`] without building an owned key when present.
    pub fn touch_with<Q>(&mut self, key: &Q) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let generation = self.generation;
        if !self.map.contains_key(key) {
            self.map.insert(key.to_owned(), (V::default(), generation));
        }
        let slot = self.map.get_mut(key).expect("inserted above");
        slot.1 = generation;
        &mut slot.0
    }

    /// Drop the state of every subject not touched since [`StateMap::begin`].
    pub fn sweep(&mut self) {
        let generation = self.generation;
        self.map.retain(|_, (_, seen)| *seen == generation);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_and_reset_give_nothing() {
        let t0 = Instant::now();
        let mut c = Counter::default();
        assert_eq!(c.update(100, t0), None);
        let d = c.update(300, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(d.delta, 200);
        assert!((d.per_sec() - 100.0).abs() < 1e-9);
        // counter restart: no rate, then rates resume from the new base
        assert_eq!(c.update(50, t0 + Duration::from_secs(4)), None);
        let r = c.rate(80, t0 + Duration::from_millis(4500)).unwrap();
        assert!((r - 60.0).abs() < 1e-9);
    }

    #[test]
    fn zero_elapsed_gives_nothing() {
        let t0 = Instant::now();
        let mut c = Counter::default();
        c.update(1, t0);
        assert_eq!(c.update(2, t0), None);
    }

    #[test]
    fn state_map_drops_unseen() {
        let mut m: StateMap<String, Counter> = StateMap::default();
        let t0 = Instant::now();
        m.begin();
        m.touch("a".to_string()).update(1, t0);
        m.touch_with("b").update(1, t0);
        m.sweep();
        assert_eq!(m.len(), 2);
        m.begin();
        let d = m.touch_with("a").update(11, t0 + Duration::from_secs(1));
        assert_eq!(d.map(|d| d.delta), Some(10));
        m.sweep();
        assert_eq!(m.len(), 1);
        assert!(m.get(&"b".to_string()).is_none());
    }
}
