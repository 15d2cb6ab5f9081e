//! Tables keyed by block id: the allocator's id → node table ([`IdTable`]) and the set of ids a
//! map decoder has seen ([`IdSet`]).
//!
//! Ids are handed out in sequence (`Allocator::new_id`), so the live ones mostly lie in a window
//! just below the next id to hand out. [`IdTable`] keeps that window in a vector indexed by
//! `id - base`: a lookup is one load, and a table built in id order is written sequentially.
//! Ids outside it (old survivors the window has moved past, ids chosen far out with
//! `alloc_with_id`, the map's id) go to a hash map.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// No node: an empty slot of the window.
const EMPTY: u32 = u32::MAX;

/// The window never has to be smaller than this many ids to be allowed to cover an id.
const MIN_WINDOW: usize = 4096;

/// A multiplicative hash for `u32` ids: the id table is on the alloc/free fast path, and ids
/// are not attacker-chosen keys that need `SipHash`'s flooding resistance.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        let h = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// Id → node index, for every live id (the map's included).
///
/// Ids in `base .. base + dense.len()` are in `dense` (`EMPTY` when not live); every other
/// live id is in `far`. The window only grows or slides forward, to at most
/// `4 × max(live ids, hint) + MIN_WINDOW` slots, so its memory is bounded by the live count,
/// whatever ids are used.
#[derive(Clone, Debug, Default)]
pub(crate) struct IdTable {
    base: u32,
    dense: Vec<u32>,
    far: IdMap,
    len: usize,
    /// The live count the table expects (from `reserve`): the window may be sized for it.
    hint: usize,
}

impl IdTable {
    /// The number of live ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `additional` more ids (the window may cover that many).
    pub fn reserve(&mut self, additional: usize) {
        self.hint = self.hint.max(self.len.saturating_add(additional));
    }

    #[inline]
    fn slot(&self, id: u32) -> Option<usize> {
        let i = id.wrapping_sub(self.base) as usize;
        (i < self.dense.len()).then_some(i)
    }

    /// The node of `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<u32> {
        match self.slot(id) {
            Some(i) => {
                let node = self.dense[i];
                (node != EMPTY).then_some(node)
            }
            None => self.far.get(&id).copied(),
        }
    }

    /// Whether `id` is live.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.get(id).is_some()
    }

    /// Records `node` as the node of `id`; returns the node it had, if any.
    #[inline]
    pub fn insert(&mut self, id: u32, node: u32) -> Option<u32> {
        debug_assert_ne!(node, EMPTY);
        let slot = match self.slot(id) {
            Some(i) => Some(i),
            None => self.cover(id),
        };
        let old = match slot {
            Some(i) => {
                let old = std::mem::replace(&mut self.dense[i], node);
                (old != EMPTY).then_some(old)
            }
            None => self.far.insert(id, node),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Forgets `id`; returns its node, if it was live.
    #[inline]
    pub fn remove(&mut self, id: u32) -> Option<u32> {
        let old = match self.slot(id) {
            Some(i) => {
                let old = std::mem::replace(&mut self.dense[i], EMPTY);
                (old != EMPTY).then_some(old)
            }
            None => self.far.remove(&id),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Every live id and its node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let base = self.base;
        self.dense
            .iter()
            .enumerate()
            .filter(|&(_, &node)| node != EMPTY)
            .map(move |(i, &node)| (base.wrapping_add(i as u32), node))
            .chain(self.far.iter().map(|(&id, &node)| (id, node)))
    }

    /// The largest the window may be.
    fn max_window(&self) -> usize {
        self.len
            .max(self.hint)
            .saturating_mul(4)
            .saturating_add(MIN_WINDOW)
            .min(u32::MAX as usize)
    }

    /// Grows or slides the window so that it covers `id`, if that keeps it within its bound
    /// and `id` is not far ahead of it; returns `id`'s slot. Ids behind the window, and the
    /// map's id, stay in the hash map.
    #[cold]
    fn cover(&mut self, id: u32) -> Option<usize> {
        if id == u32::MAX {
            return None;
        }
        let max = self.max_window();
        if self.dense.is_empty() && self.far.is_empty() {
            // The first id: the window starts at 0 when it can, so it covers the ids handed
            // out first from 1 on.
            self.base = if (id as usize) < max { 0 } else { id };
        } else if self.dense.is_empty() {
            self.base = id;
        }
        let end = u64::from(self.base) + self.dense.len() as u64;
        let id64 = u64::from(id);
        if id64 < u64::from(self.base) || id64 >= end + max as u64 {
            return None;
        }
        let needed = (id64 - u64::from(self.base)) as usize + 1;
        if needed <= max {
            // Grow by at least half or a quarter of the bound (so the hash map below is
            // scanned O(1) times per id, amortized), up to the bound.
            let len = self.dense.len();
            let new_len = needed
                .max(len.saturating_mul(3) / 2)
                .max(len.saturating_add(max / 4))
                .min(max);
            self.dense.resize(new_len, EMPTY);
        } else {
            // Slide: the window ends half a window past `id`; live ids it leaves behind move
            // to the hash map.
            let new_base = (id64 + 1 + (max / 2) as u64 - max as u64) as u32;
            let shift = new_base.wrapping_sub(self.base) as usize;
            let old_base = self.base;
            let gone = shift.min(self.dense.len());
            for (i, &node) in self.dense[..gone].iter().enumerate() {
                if node != EMPTY {
                    self.far.insert(old_base.wrapping_add(i as u32), node);
                }
            }
            self.dense.drain(..gone);
            self.dense.resize(max, EMPTY);
            self.base = new_base;
        }
        // Ids of the hash map the window now covers move into it.
        if !self.far.is_empty() {
            let (base, len) = (self.base, self.dense.len());
            let covered: Vec<u32> = self
                .far
                .keys()
                .copied()
                .filter(|&k| (k.wrapping_sub(base) as usize) < len)
                .collect();
            for k in covered {
                if let Some(node) = self.far.remove(&k) {
                    self.dense[k.wrapping_sub(base) as usize] = node;
                }
            }
        }
        self.slot(id)
    }

    /// Checks the table's own structure: the count, and no id both in the window and in the
    /// hash map.
    pub fn check(&self) -> Vec<String> {
        let mut faults = Vec::new();
        let dense = self.dense.iter().filter(|&&n| n != EMPTY).count();
        if dense + self.far.len() != self.len {
            faults.push(format!(
                "the id table counts {} ids but holds {}",
                self.len,
                dense + self.far.len()
            ));
        }
        if self.dense.len() > u32::MAX as usize {
            faults.push("the id window is too long".into());
        }
        for &id in self.far.keys() {
            if self.slot(id).is_some() {
                faults.push(format!("id {id} is in the hash map but inside the window"));
            }
        }
        faults
    }
}

/// A set of ids, for finding an id that appears twice: a bitmap for the ids below a bound
/// sized from the number of ids expected, a hash set for the rest.
pub(crate) struct IdSet {
    bits: Vec<u64>,
    far: HashSet<u32, BuildHasherDefault<IdHasher>>,
}

impl IdSet {
    /// A set sized for about `expected` ids.
    pub fn new(expected: usize) -> Self {
        let words = expected.saturating_mul(4).max(MIN_WINDOW) / 64;
        Self {
            bits: vec![0; words],
            far: HashSet::default(),
        }
    }

    /// Adds `id`; returns false if it was already there.
    #[inline]
    pub fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        match self.bits.get_mut(word) {
            Some(w) => {
                let was = *w & (1 << bit) != 0;
                *w |= 1 << bit;
                !was
            }
            None => self.far.insert(id),
        }
    }

    /// Whether `id` is in the set.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        match self.bits.get(word) {
            Some(w) => *w & (1 << bit) != 0,
            None => self.far.contains(&id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn agrees(t: &IdTable, model: &BTreeMap<u32, u32>) {
        assert!(t.check().is_empty());
        assert_eq!(t.len(), model.len());
        for (&id, &node) in model {
            assert_eq!(t.get(id), Some(node), "id {id}");
        }
        let mut listed: Vec<(u32, u32)> = t.iter().collect();
        listed.sort_unstable();
        assert_eq!(
            listed,
            model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sequential_ids_stay_in_a_bounded_window() {
        let mut t = IdTable::default();
        let mut model = BTreeMap::new();
        // A sliding population: ids in sequence, the oldest freed, one old id kept forever.
        for id in 1..200_000u32 {
            assert_eq!(t.insert(id, id * 2), None);
            model.insert(id, id * 2);
            if id > 1000 && id % 7 != 0 {
                let old = id - 1000;
                if old != 5 && model.remove(&old).is_some() {
                    assert_eq!(t.remove(old), Some(old * 2));
                }
            }
            if id % 10_007 == 0 {
                agrees(&t, &model);
            }
        }
        agrees(&t, &model);
        assert!(t.dense.len() <= t.max_window());
        assert!(t.contains(5));
        assert!(!t.contains(6));
    }

    #[test]
    fn far_and_reserved_ids_go_to_the_hash_map() {
        let mut t = IdTable::default();
        let mut model = BTreeMap::new();
        for (id, node) in [
            (u32::MAX, 1),
            (u32::MAX - 1, 2),
            (3, 3),
            (1 << 30, 4),
            (4, 5),
        ] {
            assert_eq!(t.insert(id, node), None);
            model.insert(id, node);
        }
        agrees(&t, &model);
        assert_eq!(t.insert(3, 9), Some(3));
        model.insert(3, 9);
        assert_eq!(t.remove(u32::MAX), Some(1));
        model.remove(&u32::MAX);
        assert_eq!(t.remove(u32::MAX), None);
        agrees(&t, &model);
        // The window grows over ids first put in the hash map.
        for id in 5..20_000 {
            t.insert(id, id);
            model.insert(id, id);
        }
        agrees(&t, &model);
    }

    #[test]
    fn id_set_finds_repeats() {
        let mut s = IdSet::new(10);
        for id in [1, 5, 4095, 4096, 1 << 20, u32::MAX] {
            assert!(!s.contains(id));
            assert!(s.insert(id));
            assert!(!s.insert(id));
            assert!(s.contains(id));
        }
    }
}
