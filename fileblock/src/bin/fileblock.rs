//! The `fileblock` command-line tool: inspect, check and compact a fileblock file.
//!
//! ```text
//! fileblock stat    FILE [--page-size N]
//! fileblock check   FILE [--page-size N]
//! fileblock dump    FILE [--page-size N]
//! fileblock compact FILE [--page-size N] [--max-bytes N]
//! ```
//!
//! The page size is read from the superblock unless given: the first 512 bytes of page 0 hold
//! superblock A's header whatever the page size; if A is damaged, superblock B is looked for
//! at every possible page size. Exit status: 0 when all is well, 1 when `check` finds damage
//! or a broken invariant, 2 for bad usage or an error that is not corruption.

use std::error::Error as StdError;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::Arc;

use fileblock::format::{self, SUPERBLOCK_SIZE, Slot, Superblock};
use fileblock::{CompactLimit, Config, Error, ExtentKind, FileBlock};
use pageio::{FdPageIo, PageIo};

const USAGE: &str = "\
usage: fileblock <command> FILE [options]

commands:
  stat      counters of the file's space
  check     both superblocks, the extent map and every invariant; exit 1 if anything is wrong
  dump      the superblocks and the table of extents
  compact   move blocks into holes, commit and shrink the file

options:
  --page-size N   the file's page size (default: read from the superblock)
  --max-bytes N   compact: move at most N bytes of blocks";

/// A failure of the tool itself (usage, I/O): exit status 2.
struct Fail(String);

impl<E: StdError> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(chain(&e))
    }
}

/// An error and its sources, joined.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

struct Args {
    command: String,
    path: String,
    page_size: Option<usize>,
    max_bytes: Option<u64>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, Fail> {
    let usage = |why: &str| Fail(format!("{why}\n\n{USAGE}"));
    let command = args.next().ok_or_else(|| usage("missing command"))?;
    if command == "-h" || command == "--help" || command == "help" {
        return Err(Fail(USAGE.into()));
    }
    let mut path = None;
    let mut page_size = None;
    let mut max_bytes = None;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, Fail> {
            let value = args
                .next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))?;
            value
                .parse()
                .map_err(|_| usage(&format!("{name}: not a number: {value}")))
        };
        match arg.as_str() {
            "--page-size" => {
                page_size = Some(
                    usize::try_from(number("--page-size")?)
                        .map_err(|_| usage("--page-size is too large"))?,
                );
            }
            "--max-bytes" => max_bytes = Some(number("--max-bytes")?),
            other if other.starts_with("--") => {
                return Err(usage(&format!("unknown option {other}")));
            }
            other if path.is_none() => path = Some(other.to_owned()),
            other => return Err(usage(&format!("unexpected argument {other}"))),
        }
    }
    Ok(Args {
        command,
        path: path.ok_or_else(|| usage("missing FILE"))?,
        page_size,
        max_bytes,
    })
}

fn main() -> ExitCode {
    let result = parse(std::env::args().skip(1)).and_then(|args| run(&args));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Fail(text)) => {
            eprintln!("fileblock: {text}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when `check` found something wrong.
fn run(args: &Args) -> Result<bool, Fail> {
    let page_size = match args.page_size {
        Some(ps) => ps,
        None => discover_page_size(&args.path)?,
    };
    match args.command.as_str() {
        "stat" => {
            stat(&open(args, page_size, false)?);
            Ok(true)
        }
        "check" => check(args, page_size),
        "dump" => dump(args, page_size).map(|()| true),
        "compact" => compact(args, page_size).map(|()| true),
        other => Err(Fail(format!("unknown command {other}\n\n{USAGE}"))),
    }
}

/// Reads 512 bytes at `offset`, or `None` if the file is shorter.
fn read_header(file: &mut File, offset: u64) -> Result<Option<Vec<u8>>, Fail> {
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    file.seek(SeekFrom::Start(offset))?;
    match file.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The page size recorded in superblock A, or in superblock B at the one page size where it
/// lies at that offset and records that size.
fn discover_page_size(path: &str) -> Result<usize, Fail> {
    let mut file = File::open(path).map_err(|e| Fail(format!("{path}: {e}")))?;
    if let Some(header) = read_header(&mut file, 0)?
        && let Ok(sb) = format::decode_superblock(&header, Slot::A)
    {
        return Ok(sb.page_size as usize);
    }
    let mut ps = pageio::MIN_PAGE_SIZE;
    while ps <= pageio::MAX_PAGE_SIZE {
        if let Some(header) = read_header(&mut file, ps as u64)?
            && let Ok(sb) = format::decode_superblock(&header, Slot::B)
            && sb.page_size as usize == ps
        {
            return Ok(ps);
        }
        ps *= 2;
    }
    Err(Fail(format!(
        "{path}: no valid superblock found to learn the page size from; pass --page-size"
    )))
}

fn device(path: &str, page_size: usize, write: bool) -> Result<Arc<dyn PageIo>, Fail> {
    let with_path = |e: &dyn StdError| Fail(format!("{path}: {}", chain(e)));
    let io = if write {
        FdPageIo::open(path, page_size).map_err(|e| with_path(&e))?
    } else {
        let file = File::open(path).map_err(|e| with_path(&e))?;
        FdPageIo::from_fd(OwnedFd::from(file), page_size).map_err(|e| with_path(&e))?
    };
    Ok(Arc::new(io))
}

fn open(args: &Args, page_size: usize, write: bool) -> Result<FileBlock, Fail> {
    let io = device(&args.path, page_size, write)?;
    FileBlock::open(io, Config::default())
        .map_err(|e| Fail(format!("{}: {}", args.path, chain(&e))))
}

fn stat(file: &FileBlock) {
    let s = file.stats();
    println!("generation     {}", s.generation);
    println!("page size      {}", s.page_size);
    println!("alloc unit     {}", s.alloc_unit);
    println!("file length    {}", s.file_len);
    println!("body length    {}", s.body_len);
    println!("live blocks    {}", s.live_blocks);
    println!("used           {}", s.used);
    println!("map            {}", s.map_len);
    println!("free           {}", s.free);
    println!("pending        {}", s.pending);
    println!("largest free   {}", s.largest_free);
    println!("extents        {}", s.extents);
    println!("fragmentation  {:.3}", s.fragmentation);
    println!("roots          {}", file.roots().count());
}

/// Decodes both superblocks straight from the device.
fn superblocks(io: &dyn PageIo) -> Result<[(Slot, fileblock::Result<Superblock>); 2], Fail> {
    let ps = io.page_size();
    let pages = io.num_pages()?;
    let mut page = vec![0u8; ps];
    let mut read = |slot: Slot| -> Result<fileblock::Result<Superblock>, Fail> {
        if slot.page() >= pages {
            return Ok(Err(Error::Corrupt {
                what: format!("missing: the file has {pages} pages"),
                at: fileblock::Location::Superblock(slot),
            }));
        }
        io.read_page(slot.page(), &mut page)?;
        Ok(format::decode_superblock(&page, slot))
    };
    Ok([(Slot::A, read(Slot::A)?), (Slot::B, read(Slot::B)?)])
}

fn check(args: &Args, page_size: usize) -> Result<bool, Fail> {
    let io = device(&args.path, page_size, false)?;
    let mut problems = 0usize;
    println!(
        "{}: {} bytes, page size {page_size}",
        args.path,
        io.num_pages()?.saturating_mul(page_size as u64)
    );
    for (slot, sb) in superblocks(&*io)? {
        match sb {
            Ok(sb) if sb.page_size as usize != page_size => {
                problems += 1;
                println!(
                    "superblock {slot}: generation {}, but it records {}-byte pages, not {page_size}",
                    sb.generation, sb.page_size
                );
            }
            Ok(sb) => println!("superblock {slot}: ok, generation {}", sb.generation),
            Err(e) => {
                problems += 1;
                println!("superblock {slot}: {}", chain(&e));
            }
        }
    }
    match FileBlock::open(io, Config::default()) {
        Ok(file) => {
            println!(
                "open: ok, generation {}, {} blocks, {} extents",
                file.stats().generation,
                file.stats().live_blocks,
                file.stats().extents
            );
            for problem in file.validate() {
                problems += 1;
                println!("invariant broken at {problem}");
            }
        }
        Err(e @ Error::Corrupt { .. }) => {
            problems += 1;
            println!("open: {}", chain(&e));
        }
        Err(e) => return Err(Fail(format!("{}: {}", args.path, chain(&e)))),
    }
    if problems == 0 {
        println!("clean");
    } else {
        println!("CORRUPT: {problems} problem(s)");
    }
    Ok(problems == 0)
}

fn dump(args: &Args, page_size: usize) -> Result<(), Fail> {
    let io = device(&args.path, page_size, false)?;
    for (slot, sb) in superblocks(&*io)? {
        match sb {
            Ok(sb) => {
                println!(
                    "superblock {slot}: generation {}, page size {}, alloc unit {}, body {} units",
                    sb.generation, sb.page_size, sb.alloc_unit, sb.body_units
                );
                println!(
                    "  map at unit {} ({} units, {} pages, {} records, file offset {})",
                    sb.map_offset,
                    sb.map_units,
                    sb.map_pages,
                    sb.map_records,
                    sb.map_file_offset()
                );
                for (name, id) in &sb.roots {
                    println!("  root {name:?} -> {id}");
                }
            }
            Err(e) => println!("superblock {slot}: {}", chain(&e)),
        }
    }
    let file = FileBlock::open(io, Config::default())
        .map_err(|e| Fail(format!("{}: {}", args.path, chain(&e))))?;
    println!(
        "extents of generation {} (offsets in bytes):",
        file.stats().generation
    );
    println!("{:>8}  {:>14}  {:>12}  kind", "index", "offset", "length");
    for (index, e) in file.extents().enumerate() {
        let kind = match e.kind {
            ExtentKind::Block(id) => format!("block {id}"),
            ExtentKind::Map => "map".into(),
            ExtentKind::Free => "free".into(),
            ExtentKind::Pending => "pending".into(),
        };
        println!("{index:>8}  {:>14}  {:>12}  {kind}", e.offset, e.len);
    }
    Ok(())
}

fn compact(args: &Args, page_size: usize) -> Result<(), Fail> {
    let mut file = open(args, page_size, true)?;
    let limit = args
        .max_bytes
        .map_or(CompactLimit::Unbounded, CompactLimit::Bytes);
    let report = file
        .compact(limit)
        .map_err(|e| Fail(format!("{}: {}", args.path, chain(&e))))?;
    println!(
        "moved {} blocks ({} bytes) in {} commits; file {} -> {} bytes{}",
        report.blocks_moved,
        report.bytes_moved,
        report.commits,
        report.old_file_len,
        report.new_file_len,
        if report.limited {
            " (limit reached)"
        } else {
            ""
        }
    );
    Ok(())
}
