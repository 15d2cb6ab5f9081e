//! Configuration: the allocation unit, the page cache and the size classes of free extents.

use std::time::Duration;

use pagecache::CacheConfig;

use crate::format::{MIN_ALLOC_UNIT, valid_alloc_unit};
use crate::{Error, Result};

/// How a [`FileBlock`](crate::FileBlock) is set up.
///
/// ```
/// use fileblock::{BucketConfig, Config};
/// use pagecache::CacheConfig;
///
/// let config = Config::default()
///     .with_alloc_unit(256)
///     .with_cache(CacheConfig::default().with_capacity(4096))
///     .with_buckets(BucketConfig::new([1, 2, 4, 8, 16, 64, 256])?);
/// assert_eq!(config.alloc_unit(), 256);
/// # Ok::<(), fileblock::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    alloc_unit: u32,
    cache: CacheConfig,
    buckets: BucketConfig,
}

impl Default for Config {
    /// 512-byte allocation units, the default page cache and the default size classes.
    fn default() -> Self {
        Self {
            alloc_unit: 512,
            cache: CacheConfig::default(),
            buckets: BucketConfig::default(),
        }
    }
}

impl Config {
    /// The allocation unit in bytes: every block's size is a multiple of it. A power of two
    /// from 64 bytes to the page size. Used by [`create`](crate::FileBlock::create) only: an
    /// existing file keeps the unit it was created with (it is stored in the superblock).
    #[must_use]
    pub fn with_alloc_unit(mut self, bytes: u32) -> Self {
        self.alloc_unit = bytes;
        self
    }

    /// The configuration of the page cache under the block cache.
    #[must_use]
    pub fn with_cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// The size classes of free extents. An in-memory structure: it may differ between opens.
    #[must_use]
    pub fn with_buckets(mut self, buckets: BucketConfig) -> Self {
        self.buckets = buckets;
        self
    }

    /// The allocation unit in bytes.
    #[must_use]
    pub fn alloc_unit(&self) -> u32 {
        self.alloc_unit
    }

    /// The page cache configuration.
    #[must_use]
    pub fn cache(&self) -> CacheConfig {
        self.cache
    }

    /// The size classes.
    #[must_use]
    pub fn buckets(&self) -> &BucketConfig {
        &self.buckets
    }

    /// The allocation unit, the cache configuration and the size classes.
    pub(crate) fn into_parts(self) -> (u32, CacheConfig, BucketConfig) {
        (self.alloc_unit, self.cache, self.buckets)
    }

    /// Checks the allocation unit against the backend's page size.
    pub(crate) fn check_alloc_unit(&self, page_size: usize) -> Result<()> {
        let ps = u32::try_from(page_size).unwrap_or(u32::MAX);
        if valid_alloc_unit(self.alloc_unit, ps) {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                reason: "the allocation unit must be a power of two from 64 bytes to the page size",
            })
        }
    }
}

const _: () = assert!(MIN_ALLOC_UNIT == 64);

/// The size classes of free extents: ascending upper bounds, in allocation units.
///
/// Free extents are kept on one list per class: class `i` holds the extents whose size is
/// above bound `i - 1` and at most bound `i`; extents above the last bound share the last
/// class. An allocation of `n` units looks first in the smallest class whose bound is at least
/// `n`, then takes any extent of the next non-empty class above (all of which fit). Finer
/// classes waste less space; fewer classes mean shorter scans. At most 64 classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    bounds: Vec<u32>,
}

impl Default for BucketConfig {
    /// 62 classes growing by ×1.5 and ×1.33 in turn: 1, 2, 3, 4, 6, 8, 12, 16, 24, …, 2^30,
    /// 3·2^29, 2^31. The rounding loss of a class is then at most a third of the request.
    fn default() -> Self {
        let mut bounds = vec![1u32];
        for k in 1..=31 {
            bounds.push(1 << k);
            if k < 31 {
                bounds.push(3 << (k - 1));
            }
        }
        bounds.sort_unstable();
        bounds.dedup();
        Self { bounds }
    }
}

impl BucketConfig {
    /// The most classes a configuration may have.
    pub const MAX_CLASSES: usize = 64;

    /// Size classes with these upper bounds (in allocation units). They must be nonzero and
    /// strictly ascending, and there must be 1 to [`MAX_CLASSES`](Self::MAX_CLASSES) of them.
    pub fn new(bounds: impl Into<Vec<u32>>) -> Result<Self> {
        let bounds = bounds.into();
        if bounds.is_empty() || bounds.len() > Self::MAX_CLASSES {
            return Err(Error::InvalidConfig {
                reason: "there must be 1 to 64 size classes",
            });
        }
        if bounds.first() == Some(&0) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidConfig {
                reason: "size class bounds must be nonzero and strictly ascending",
            });
        }
        Ok(Self { bounds })
    }

    /// The upper bounds, ascending.
    #[must_use]
    pub fn bounds(&self) -> &[u32] {
        &self.bounds
    }

    /// The class of a free extent of `units` units.
    pub(crate) fn class_of(&self, units: u32) -> usize {
        self.bounds
            .partition_point(|&b| b < units)
            .min(self.bounds.len() - 1)
    }
}

/// How much work one [`compact`](crate::FileBlock::compact) call may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactLimit {
    /// Move as much as helps.
    Unbounded,
    /// Stop before moving more than this many bytes of blocks.
    Bytes(u64),
    /// Stop moving blocks once this much time has passed (the commits that follow still run).
    Time(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_are_valid_and_geometric() {
        let b = BucketConfig::default();
        assert_eq!(BucketConfig::new(b.bounds().to_vec()).unwrap(), b);
        assert_eq!(&b.bounds()[..8], &[1, 2, 3, 4, 6, 8, 12, 16]);
        assert_eq!(*b.bounds().last().unwrap(), 1 << 31);
        assert!(b.bounds().len() <= BucketConfig::MAX_CLASSES);
        assert_eq!(b.class_of(1), 0);
        assert_eq!(b.class_of(5), 4);
        assert_eq!(b.class_of(6), 4);
        assert_eq!(b.class_of(7), 5);
        assert_eq!(b.class_of(u32::MAX), b.bounds().len() - 1);
    }

    #[test]
    fn bad_buckets_are_rejected() {
        assert!(BucketConfig::new([]).is_err());
        assert!(BucketConfig::new([0, 1]).is_err());
        assert!(BucketConfig::new([2, 2]).is_err());
        assert!(BucketConfig::new([3, 1]).is_err());
        assert!(BucketConfig::new(vec![1; 65]).is_err());
        let one = BucketConfig::new([4]).unwrap();
        assert_eq!(one.class_of(1), 0);
        assert_eq!(one.class_of(100), 0);
    }

    #[test]
    fn alloc_unit_is_checked_against_the_page_size() {
        for au in [64, 512, 4096] {
            Config::default()
                .with_alloc_unit(au)
                .check_alloc_unit(4096)
                .unwrap();
        }
        for au in [0, 32, 100, 8192] {
            assert!(
                Config::default()
                    .with_alloc_unit(au)
                    .check_alloc_unit(4096)
                    .is_err()
            );
        }
    }
}
