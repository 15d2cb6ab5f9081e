//! The public handle types are `Send + Sync` (checked at compile time) and can be shared across
//! threads as `Arc<dyn PageIo>`.

use std::sync::Arc;

use pageio::{FaultyPageIo, FdPageIo, MemPageIo, PageIo};

const fn assert_send_sync<T: Send + Sync + 'static>() {}

// These fail to compile if a type loses `Send` or `Sync`.
const _: () = {
    assert_send_sync::<FdPageIo>();
    assert_send_sync::<MemPageIo>();
    assert_send_sync::<FaultyPageIo<MemPageIo>>();
    assert_send_sync::<FaultyPageIo<FdPageIo>>();
    assert_send_sync::<FaultyPageIo<Arc<dyn PageIo>>>();
    assert_send_sync::<pageio::Error>();
    assert_send_sync::<pageio::conformance::Failure>();
};

#[test]
fn handles_work_from_other_threads() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let backends: Vec<Arc<dyn PageIo>> = vec![
        Arc::new(FdPageIo::create(dir.path().join("pages"), 512)?),
        Arc::new(MemPageIo::new(512)?),
        Arc::new(FaultyPageIo::new(MemPageIo::new(512)?)),
    ];
    for io in backends {
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let io = Arc::clone(&io);
                s.spawn(move || io.write_page(u64::from(t), &[t + 1; 512]));
            }
        });
        let mut buf = [0; 512];
        for t in 0..4u8 {
            io.read_page(u64::from(t), &mut buf)?;
            assert_eq!(buf, [t + 1; 512], "{io:?}");
        }
    }
    Ok(())
}
