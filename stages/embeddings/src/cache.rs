//! Vectors of recently embedded texts. Navigation links repeat on every page of a site, and
//! a batch retried after an outage repeats whole: neither should run the model again.

use std::collections::HashMap;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

/// A bounded text → vector map in two generations: when the young one is full it becomes the
/// old one and the previous old one is dropped, so memory stays within `capacity` entries
/// while frequently used texts survive (a hit in the old generation is moved to the young).
pub struct VectorCache {
    young: HashMap<u64, Arc<[f32]>>,
    old: HashMap<u64, Arc<[f32]>>,
    half: usize,
}

impl VectorCache {
    /// A cache holding at most about `capacity` vectors (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            half: capacity / 2,
        }
    }

    fn key(text: &str) -> u64 {
        xxh3_64(text.as_bytes())
    }

    /// The vector of `text`, if known.
    pub fn get(&mut self, text: &str) -> Option<Arc<[f32]>> {
        let k = Self::key(text);
        if let Some(v) = self.young.get(&k) {
            return Some(v.clone());
        }
        let v = self.old.remove(&k)?;
        self.put_key(k, v.clone());
        Some(v)
    }

    /// Remembers the vector of `text`.
    pub fn put(&mut self, text: &str, vector: Arc<[f32]>) {
        self.put_key(Self::key(text), vector);
    }

    fn put_key(&mut self, k: u64, v: Arc<[f32]>) {
        if self.half == 0 {
            return;
        }
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, v);
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f32) -> Arc<[f32]> {
        Arc::from(vec![x])
    }

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let mut c = VectorCache::new(4);
        c.put("a", v(1.0));
        c.put("b", v(2.0));
        c.put("c", v(3.0)); // young full: a, b become old
        assert_eq!(c.get("a").unwrap()[0], 1.0); // promoted
        c.put("d", v(4.0));
        c.put("e", v(5.0));
        assert!(c.len() <= 4);
        assert!(c.get("a").is_some() || c.get("e").is_some());
        assert!(c.get("zzz").is_none());
        let mut off = VectorCache::new(0);
        off.put("a", v(1.0));
        assert!(off.get("a").is_none());
    }
}
