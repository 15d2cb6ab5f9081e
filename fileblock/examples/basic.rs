//! Creates a file of blocks on disk, frees some of them, commits, reopens and reads back.
//!
//! ```text
//! cargo run -p fileblock --example basic -- [PATH]
//! ```
//!
//! Without a path the file goes to a temporary directory and is removed. With one, it is left
//! there to look at with the `fileblock` tool (`cargo run -p fileblock --features cli -- stat
//! PATH`).

use std::sync::Arc;

use fileblock::{BlockId, Config, FileBlock};
use pageio::FdPageIo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| dir.path().join("blocks.fb"), Into::into);

    let mut file = FileBlock::create(Arc::new(FdPageIo::create(&path, 4096)?), Config::default())?;
    let mut ids = Vec::new();
    for i in 0..100u64 {
        let id = file.alloc(100 + i * 97 % 5000)?;
        let seed = i as u8;
        file.write(id)?.fill(seed);
        ids.push((id, seed));
    }
    file.set_root("first", Some(ids[0].0))?;
    file.flush()?;
    // Free every third block: holes, reusable after the next commit.
    for (id, _) in ids.iter().step_by(3) {
        if *id != ids[0].0 {
            file.free(*id)?;
        }
    }
    ids.retain(|(id, _)| file.contains(*id));
    file.flush()?;
    println!("{:#?}", file.stats());
    drop(file);

    let file = FileBlock::open(Arc::new(FdPageIo::open(&path, 4096)?), Config::default())?;
    assert!(file.validate().is_empty());
    for (id, seed) in &ids {
        assert!(file.read(*id)?.iter().all(|b| b == seed));
    }
    assert_eq!(file.root("first"), Some(BlockId(1)));
    println!("{}: {} blocks read back", path.display(), ids.len());
    Ok(())
}
