//! `MemPageIo` (alone and behind an `Arc`) passes the conformance suite at the smallest, a common
//! and the largest page size.

use std::sync::Arc;

use pageio::{MemPageIo, PageIo, conformance};

#[test]
fn mem_passes_at_every_tested_page_size() -> Result<(), Box<dyn std::error::Error>> {
    for page_size in [512, 4096, 1 << 20] {
        conformance::run_all(MemPageIo::new(page_size)?)?;
    }
    Ok(())
}

#[test]
fn arc_of_mem_passes() -> Result<(), Box<dyn std::error::Error>> {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(4096)?);
    conformance::run_all(io)?;
    Ok(())
}

#[test]
fn checks_run_one_at_a_time_on_a_used_device() -> Result<(), Box<dyn std::error::Error>> {
    // Every check but the empty-device one works above the current end, in any order.
    let io = MemPageIo::new(512)?;
    for check in conformance::CHECKS.iter().rev() {
        if check.name() != "empty_device_reads_zeros" {
            check.run(&io)?;
        }
    }
    conformance::truncate(&io)?;
    conformance::round_trip(&io)?;
    Ok(())
}
