//! Reading a stream one line at a time without holding more of a line than a limit, and the
//! fingerprint of every byte read (what `--resume` checks the input against).

use std::io::{self, BufRead};

use sha2::{Digest, Sha256};

/// How many bytes of the input were read, and their SHA-256: cheap to carry (a copy of the
/// hash's state), finished into hex only where a checkpoint is written.
#[derive(Clone, Default)]
pub struct Fingerprint {
    bytes: u64,
    hasher: Sha256,
}

impl Fingerprint {
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
    }

    /// Hashes `data` without counting it as input read (what is not in the input's bytes but
    /// says where they came from, as a directory's file names).
    pub fn mark(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// Bytes read.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The SHA-256 of the bytes read, in hex.
    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The line is in the buffer, its `\n` (if any) included.
    Whole,
    /// The line has more than the limit's bytes: it was read to its end and thrown away as it
    /// came, and the buffer is empty. `bytes` is its length, `\n` included.
    TooLong { bytes: u64 },
}

/// Reads the next line of `reader` into `line` (emptied first), keeping at most `limit` bytes
/// of it: a longer line is read to its end without being stored. Every byte read goes into
/// `fingerprint`. `None` at the end of the stream.
pub fn read_line(
    reader: &mut dyn BufRead,
    limit: usize,
    line: &mut Vec<u8>,
    fingerprint: &mut Fingerprint,
) -> io::Result<Option<Line>> {
    line.clear();
    let mut read = 0u64;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let (piece, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        fingerprint.update(piece);
        if !too_long {
            if line.len() + piece.len() > limit {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(piece);
            }
        }
        let n = piece.len();
        read += n as u64;
        reader.consume(n);
        if ended {
            break;
        }
    }
    Ok(match (read, too_long) {
        (0, _) => None,
        (_, false) => Some(Line::Whole),
        (bytes, true) => Some(Line::TooLong { bytes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    #[test]
    fn lines_within_the_limit_are_whole_and_a_longer_one_is_skipped_unstored() {
        let text = b"short\n0123456789abcdef\nlast";
        let mut reader = BufReader::with_capacity(4, &text[..]);
        let mut line = Vec::new();
        let mut fingerprint = Fingerprint::default();
        let mut read =
            |line: &mut Vec<u8>| read_line(&mut reader, 8, line, &mut fingerprint).unwrap();
        assert_eq!(read(&mut line), Some(Line::Whole));
        assert_eq!(line, b"short\n");
        assert_eq!(read(&mut line), Some(Line::TooLong { bytes: 17 }));
        assert!(line.is_empty());
        assert_eq!(read(&mut line), Some(Line::Whole));
        assert_eq!(line, b"last");
        assert_eq!(read(&mut line), None);
        assert_eq!(fingerprint.bytes(), text.len() as u64);
        let mut whole = Fingerprint::default();
        whole.update(text);
        assert_eq!(fingerprint.sha256(), whole.sha256());
    }

    #[test]
    fn a_line_far_over_the_limit_is_never_held() {
        // 64 MiB of one line, produced as it is read: the buffer never holds more than the
        // limit (twice it at most, the vector's doubling), whatever the line's size.
        const LINE: u64 = 64 << 20;
        let line_source = io::repeat(b'a').take(LINE).chain(&b"\nnext\n"[..]);
        let mut reader = BufReader::with_capacity(1 << 16, line_source);
        let mut line = Vec::new();
        let mut fingerprint = Fingerprint::default();
        let limit = 1 << 20;
        let got = read_line(&mut reader, limit, &mut line, &mut fingerprint).unwrap();
        assert_eq!(got, Some(Line::TooLong { bytes: LINE + 1 }));
        assert!(
            line.capacity() <= 2 * limit,
            "the buffer grew to {} bytes for a limit of {limit}",
            line.capacity()
        );
        let got = read_line(&mut reader, limit, &mut line, &mut fingerprint).unwrap();
        assert_eq!((got, line.as_slice()), (Some(Line::Whole), &b"next\n"[..]));
        assert_eq!(fingerprint.bytes(), LINE + 6);
    }
}
