//! The resident-page index: a hash map from page number to a slot in a slab, and an intrusive
//! doubly-linked recency list threaded through the slab.
//!
//! Every operation is O(1) except [`Lru::iter_from_lru`], which walks from the least recently
//! used end. Nothing here knows about pins or I/O; the cache decides what to evict.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// No slot: the end of the list, or an empty list.
const NIL: u32 = u32::MAX;

/// A fast hasher for page numbers. Page numbers are not attacker-chosen keys into a shared
/// table (the cache is private to one store), so a multiplicative hash is enough; the high bits
/// are folded down so that strided keys (multiples of a power of two) still spread.
#[derive(Default, Clone, Copy)]
pub(crate) struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let p = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = p ^ (p >> 29);
    }
}

struct Node<V> {
    key: u64,
    value: Option<V>,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// A map from page number to `V` that remembers the order of use.
pub(crate) struct Lru<V> {
    index: HashMap<u64, u32, BuildHasherDefault<PageHasher>>,
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
}

impl<V> Lru<V> {
    pub(crate) fn new() -> Self {
        Self {
            index: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Looks `key` up and makes it the most recently used.
    pub(crate) fn touch(&mut self, key: u64) -> Option<&V> {
        let slot = *self.index.get(&key)?;
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
        self.nodes[slot as usize].value.as_ref()
    }

    /// Looks `key` up without changing the order.
    pub(crate) fn peek(&self, key: u64) -> Option<&V> {
        let slot = *self.index.get(&key)?;
        self.nodes[slot as usize].value.as_ref()
    }

    /// Inserts `key` as the most recently used. The key must not be present.
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        debug_assert!(!self.index.contains_key(&key));
        let slot = if let Some(slot) = self.free.pop() {
            let node = &mut self.nodes[slot as usize];
            node.key = key;
            node.value = Some(value);
            slot
        } else {
            let slot = u32::try_from(self.nodes.len()).expect("fewer than 2^32 - 1 resident pages");
            assert!(slot != NIL, "fewer than 2^32 - 1 resident pages");
            self.nodes.push(Node {
                key,
                value: Some(value),
                prev: NIL,
                next: NIL,
            });
            slot
        };
        self.index.insert(key, slot);
        self.push_front(slot);
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        let slot = self.index.remove(&key)?;
        self.unlink(slot);
        self.free.push(slot);
        self.nodes[slot as usize].value.take()
    }

    /// Entries from the least recently used towards the most recently used.
    pub(crate) fn iter_from_lru(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        let mut slot = self.tail;
        std::iter::from_fn(move || {
            if slot == NIL {
                return None;
            }
            let node = &self.nodes[slot as usize];
            slot = node.prev;
            node.value.as_ref().map(|v| (node.key, v))
        })
    }

    /// Every entry, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.nodes.iter().filter_map(|n| n.value.as_ref())
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, slot: u32) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = NIL;
            n.next = old_head;
        }
        if old_head == NIL {
            self.tail = slot;
        } else {
            self.nodes[old_head as usize].prev = slot;
        }
        self.head = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(lru: &Lru<u64>) -> Vec<u64> {
        lru.iter_from_lru().map(|(k, _)| k).collect()
    }

    #[test]
    fn keeps_recency_order() {
        let mut lru = Lru::new();
        for k in 0..5 {
            lru.insert(k, k * 10);
        }
        assert_eq!(order(&lru), [0, 1, 2, 3, 4]);
        assert_eq!(lru.touch(2), Some(&20));
        assert_eq!(order(&lru), [0, 1, 3, 4, 2]);
        assert_eq!(lru.touch(0), Some(&0));
        assert_eq!(order(&lru), [1, 3, 4, 2, 0]);
        assert_eq!(lru.remove(4), Some(40));
        assert_eq!(order(&lru), [1, 3, 2, 0]);
        lru.insert(7, 70);
        assert_eq!(order(&lru), [1, 3, 2, 0, 7]);
        assert_eq!(lru.len(), 5);
        assert_eq!(lru.peek(1), Some(&10));
        assert_eq!(order(&lru), [1, 3, 2, 0, 7]);
        assert!(lru.touch(4).is_none());
        for k in [1, 3, 2, 0, 7] {
            assert!(lru.remove(k).is_some());
        }
        assert_eq!(lru.len(), 0);
        assert!(order(&lru).is_empty());
        assert_eq!(lru.values().count(), 0);
    }

    #[test]
    fn hasher_spreads_strided_keys() {
        let hash = |k: u64| {
            let mut h = PageHasher::default();
            h.write_u64(k);
            h.finish()
        };
        let low_bits: std::collections::HashSet<u64> =
            (0..1024u64).map(|k| hash(k << 12) & 1023).collect();
        assert!(
            low_bits.len() > 512,
            "strided keys collide: {}",
            low_bits.len()
        );
    }
}
