//! Guards the `fileblock` tool: `check` passes a clean file (exit 0) and names the location of a
//! damaged map page or superblock (exit 1); `stat`, `dump` and `compact` work on real files of
//! either page size; bad usage exits 2.
//!
//! The binary needs feature `cli`. The crate lists itself as a dev-dependency with that feature,
//! so every test build (`cargo test`, `cargo nextest run --workspace --all-targets`, with or
//! without `--features cli`) builds the binary and sets `CARGO_BIN_EXE_fileblock`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use fileblock::format::{Slot, Superblock};
use fileblock::{BlockId, Config, FileBlock};
use pageio::FdPageIo;

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_fileblock"))
        .args(args)
        .output()
        .expect("run the fileblock binary");
    (
        status.code().expect("an exit code"),
        String::from_utf8(stdout).expect("utf-8 output"),
        String::from_utf8(stderr).expect("utf-8 output"),
    )
}

fn run_on(command: &str, path: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![command, path.to_str().expect("a utf-8 path")];
    args.extend_from_slice(extra);
    run(&args)
}

fn seed_byte(i: usize, at: usize) -> u8 {
    (i as u8).wrapping_mul(29).wrapping_add(at as u8)
}

/// A file of 60 written blocks with every third one freed (so compaction has work), a root,
/// two commits. Returns the path, the newest superblock and the live ids with their seeds.
fn make_file(dir: &Path, page_size: usize) -> (PathBuf, Superblock, Vec<(BlockId, usize)>) {
    let path = dir.join(format!("blocks-{page_size}.fb"));
    let io = Arc::new(FdPageIo::create(&path, page_size).expect("create file"));
    let config = Config::default().with_alloc_unit(256);
    let mut file = FileBlock::create(io, config).expect("create");
    let mut live = Vec::new();
    for i in 0..60 {
        let id = file.alloc(300 + 97 * i as u64).expect("alloc");
        let mut block = file.write(id).expect("write");
        for (at, b) in block.iter_mut().enumerate() {
            *b = seed_byte(i, at);
        }
        drop(block);
        live.push((id, i));
    }
    file.set_root("main", Some(live[1].0)).expect("root");
    file.flush().expect("flush");
    for (id, i) in std::mem::take(&mut live) {
        if i % 3 == 0 {
            file.free(id).expect("free");
        } else {
            live.push((id, i));
        }
    }
    file.flush().expect("flush");
    let sb = file.superblock().clone();
    (path, sb, live)
}

/// Flips one bit of the byte at `offset` of the file.
fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).expect("write");
}

fn assert_holds(path: &Path, page_size: usize, live: &[(BlockId, usize)]) {
    let io = Arc::new(FdPageIo::open(path, page_size).expect("open file"));
    let file = FileBlock::open(io, Config::default()).expect("open");
    assert!(file.validate().is_empty());
    assert_eq!(file.ids().count(), live.len());
    for &(id, i) in live {
        let block = file.read(id).expect("read");
        assert!(
            block
                .iter()
                .enumerate()
                .all(|(at, &b)| b == seed_byte(i, at)),
            "block {id}"
        );
    }
}

#[test]
fn check_passes_a_clean_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    for page_size in [512, 4096] {
        let (path, sb, live) = make_file(dir.path(), page_size);
        let (code, out, err) = run_on("check", &path, &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("page size {page_size}")), "{out}");
        assert!(out.contains("superblock A: ok"), "{out}");
        assert!(out.contains("superblock B: ok"), "{out}");
        assert!(
            out.contains(&format!("open: ok, generation {}", sb.generation)),
            "{out}"
        );
        assert!(out.contains(&format!("{} blocks", live.len())), "{out}");
        assert!(out.trim_end().ends_with("clean"), "{out}");
        // An explicit page size gives the same answer.
        let (code, _, _) = run_on("check", &path, &["--page-size", &page_size.to_string()]);
        assert_eq!(code, 0);
    }
}

#[test]
fn check_names_a_damaged_map_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    for page_size in [512, 4096] {
        let (path, sb, live) = make_file(dir.path(), page_size);
        let original = std::fs::read(&path).expect("read");
        let last = u64::from(sb.map_pages - 1);
        for (index, inside) in [(0, 40), (last, page_size as u64 - 3)] {
            let offset = sb.map_file_offset() + index * page_size as u64;
            flip(&path, offset + inside);
            let (code, out, err) = run_on("check", &path, &[]);
            assert_eq!(code, 1, "{out}{err}");
            assert!(
                out.contains(&format!("map page {index} at file offset {offset}")),
                "{out}"
            );
            assert!(out.contains("checksum mismatch"), "{out}");
            assert!(out.contains("CORRUPT"), "{out}");
            // Both superblocks themselves are fine.
            assert!(out.contains("superblock A: ok") && out.contains("superblock B: ok"));
            std::fs::write(&path, &original).expect("restore");
        }
        let (code, _, _) = run_on("check", &path, &[]);
        assert_eq!(code, 0);
        assert_holds(&path, page_size, &live);
    }
}

#[test]
fn check_names_a_damaged_superblock() {
    let dir = tempfile::tempdir().expect("tempdir");
    for page_size in [512, 4096] {
        let (path, sb, live) = make_file(dir.path(), page_size);
        let original = std::fs::read(&path).expect("read");
        let newest = Slot::for_generation(sb.generation);
        for slot in [Slot::A, Slot::B] {
            // A header field (the generation), then a byte of the zero padding after it.
            for inside in [17, 600.min(page_size as u64 - 1)] {
                flip(&path, slot.page() * page_size as u64 + inside);
                let (code, out, err) = run_on("check", &path, &[]);
                assert_eq!(code, 1, "superblock {slot} byte {inside}: {out}{err}");
                let other = if slot == Slot::A { Slot::B } else { Slot::A };
                assert!(
                    out.contains(&format!(
                        "superblock {slot}: corrupt file at superblock {slot} (page {})",
                        slot.page()
                    )),
                    "{out}"
                );
                assert!(out.contains(&format!("superblock {other}: ok")), "{out}");
                // The other superblock still opens the file: the newest one, or the one before.
                let generation = if slot == newest {
                    sb.generation - 1
                } else {
                    sb.generation
                };
                assert!(
                    out.contains(&format!("open: ok, generation {generation}")),
                    "{out}"
                );
                assert!(out.contains("CORRUPT: 1 problem(s)"), "{out}");
                std::fs::write(&path, &original).expect("restore");
            }
        }
        // Both damaged: nothing opens.
        flip(&path, 20);
        flip(&path, page_size as u64 + 20);
        let (code, out, err) = run_on("check", &path, &["--page-size", &page_size.to_string()]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.contains("both superblocks"), "{out}");
        // Without a valid superblock the page size cannot be learnt.
        let (code, _, err) = run_on("check", &path, &[]);
        assert_eq!(code, 2);
        assert!(err.contains("--page-size"), "{err}");
        std::fs::write(&path, &original).expect("restore");
        assert_holds(&path, page_size, &live);
    }
}

#[test]
fn check_names_a_truncated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, sb, _) = make_file(dir.path(), 4096);
    let bytes = std::fs::read(&path).expect("read");
    let cut = sb.body_end() - 5000;
    std::fs::write(&path, &bytes[..cut as usize]).expect("cut");
    let (code, out, err) = run_on("check", &path, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "the file's length ({} bytes)",
            cut.next_multiple_of(4096)
        )),
        "{out}"
    );
}

#[test]
fn stat_dump_and_compact_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    for page_size in [512, 4096] {
        let (path, sb, live) = make_file(dir.path(), page_size);

        let (code, out, err) = run_on("stat", &path, &[]);
        assert_eq!(code, 0, "{out}{err}");
        let field = |out: &str, name: &str| -> u64 {
            let row = out
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {out}"));
            row[name.len()..].trim().parse().expect("a number")
        };
        assert_eq!(field(&out, "generation"), sb.generation);
        assert_eq!(field(&out, "page size"), page_size as u64);
        assert_eq!(field(&out, "alloc unit"), 256);
        assert_eq!(field(&out, "live blocks"), live.len() as u64);
        assert_eq!(field(&out, "roots"), 1);
        assert!(field(&out, "free") > 0);
        let file_len = field(&out, "file length");
        assert_eq!(file_len, std::fs::metadata(&path).expect("metadata").len());

        let (code, out, err) = run_on("dump", &path, &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!(
                "superblock {}: generation {}",
                Slot::for_generation(sb.generation),
                sb.generation
            )),
            "{out}"
        );
        assert!(out.contains("root \"main\" -> #"), "{out}");
        for (id, _) in &live {
            assert!(
                out.contains(&format!("block {id}\n")),
                "{id} missing: {out}"
            );
        }
        assert!(out.contains("  map\n") && out.contains("  free\n"), "{out}");

        // A limited compaction, then a full one: the file shrinks, stays clean, keeps bytes.
        let (code, out, err) = run_on("compact", &path, &["--max-bytes", "1000"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("(limit reached)"), "{out}");
        let (code, out, err) = run_on("compact", &path, &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.starts_with("moved "), "{out}");
        assert!(!out.contains("limit reached"), "{out}");
        let new_len = std::fs::metadata(&path).expect("metadata").len();
        assert!(new_len < file_len, "{file_len} -> {new_len}: {out}");
        assert!(out.contains(&format!("-> {new_len} bytes")), "{out}");
        let (code, out, _) = run_on("check", &path, &[]);
        assert_eq!(code, 0, "{out}");
        assert_holds(&path, page_size, &live);
    }
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _, _) = make_file(dir.path(), 4096);
    let missing = dir.path().join("missing.fb");
    let path = path.to_str().expect("utf-8");
    for args in [
        vec![],
        vec!["check"],
        vec!["frobnicate", path],
        vec!["check", path, "--bogus"],
        vec!["check", path, "--page-size"],
        vec!["check", path, "--page-size", "many"],
        vec!["check", path, "extra"],
        vec!["check", missing.to_str().expect("utf-8")],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.starts_with("fileblock: "), "{args:?}: {err}");
    }
    let (code, _, err) = run(&["--help"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage: fileblock"), "{err}");
}
