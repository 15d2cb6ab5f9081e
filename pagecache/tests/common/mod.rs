//! Helpers shared by the scenario tests: page contents that identify themselves, and a small
//! deterministic random number generator (tests stay reproducible without a `rand` dependency).

// Each test binary compiles this module on its own and uses a different subset of it.
#![allow(
    dead_code,
    reason = "every test file uses a different subset of the helpers"
)]

use pageio::PageIo;

/// The page size every scenario test uses.
pub const PAGE_SIZE: usize = 512;

/// The content of page `no` at version `tag`: all zeros for tag 0 (a page never written), else
/// bytes that encode both the tag and the page number, so a page that went missing, came back
/// stale or landed on the wrong page number is told apart from the right one.
#[must_use]
pub fn pattern(tag: u64, no: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    if tag == 0 {
        return page;
    }
    let mut state = tag ^ no.rotate_left(32) ^ 0x5851_f42d_4c95_7f2d;
    for (i, chunk) in page.chunks_exact_mut(8).enumerate() {
        let word = match i {
            0 => tag,
            1 => no,
            _ => splitmix64(&mut state),
        };
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    page
}

/// The tag a page made by [`pattern`] carries (0 for a page of zeros): for readable failure
/// messages.
#[must_use]
pub fn tag_of(page: &[u8]) -> u64 {
    u64::from_le_bytes(page[..8].try_into().expect("a page is at least 8 bytes"))
}

/// Asserts that `page` is exactly `pattern(tag, no)`, naming the tag found when it is not.
#[track_caller]
pub fn assert_page(page: &[u8], tag: u64, no: u64, what: &str) {
    assert!(
        page == pattern(tag, no).as_slice(),
        "{what}: page {no} should hold tag {tag}, but holds tag {} (or garbage)",
        tag_of(page)
    );
}

/// Reads page `no` straight from a backend, bypassing any cache.
#[must_use]
pub fn read_backend(io: &dyn PageIo, no: u64) -> Vec<u8> {
    let mut buf = vec![0u8; io.page_size()];
    io.read_page(no, &mut buf)
        .unwrap_or_else(|e| panic!("backend read of page {no} failed: {e}"));
    buf
}

/// One step of the `splitmix64` generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small seeded random number generator for reproducible operation traces.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// A number in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
