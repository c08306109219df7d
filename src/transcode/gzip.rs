//! gzip: the object decompresses to exactly the source bytes.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::{self, Read, Write};

/// Read and write buffer size: memory stays at a few of these whatever the file size.
const BUFFER: usize = 256 * 1024;

/// Compresses `source` from its start into `out`. The header carries no name and no time
/// (mtime 0), so the same input always gives the same bytes.
pub fn compress(source: &File, out: &mut impl Write, level: u32) -> io::Result<()> {
    let mut reader = io::BufReader::with_capacity(BUFFER, source);
    let mut encoder = GzEncoder::new(out, Compression::new(level));
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buf[..n])?;
    }
    encoder.finish()?.flush()
}
