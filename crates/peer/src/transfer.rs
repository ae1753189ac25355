//! The file-transfer protocol of the `file` data channel, shared with `web/floe.js`.
//!
//! ```text
//! sender                                   receiver
//!   | -- text {kind:"file", name, size, type, sha256} -> |
//!   | -- binary chunk (≤ 16 KiB) ... ------------------> |   until `size` bytes arrived
//!   | <- text {kind:"file-ack", name, size, sha256, ok} |   receiver's own SHA-256 of the bytes
//! ```
//! The channel is reliable and ordered (SCTP), so chunks need no framing. `sha256` (lower-case
//! hex) is optional in the header for compatibility; the ack always carries the receiver's digest,
//! so the sender can verify even when the header had none. No IO here: the caller moves bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Chunk size: the same as floe.js (16 KiB is the largest message every browser delivers
/// without fragmentation trouble).
pub const FILE_CHUNK: usize = 16 * 1024;

/// The header that starts a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// Always "file".
    pub kind: String,
    /// File name as the sender knows it (never trusted as a path: see [`safe_file_name`]).
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// MIME type, may be empty.
    #[serde(rename = "type", default)]
    pub mime: String,
    /// SHA-256 of the whole file, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The receiver's answer after the last byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAck {
    /// Always "file-ack".
    pub kind: String,
    /// Name from the header.
    pub name: String,
    /// Bytes received.
    pub size: u64,
    /// SHA-256 the receiver computed, lower-case hex.
    pub sha256: String,
    /// Size and (when the header had one) checksum matched.
    pub ok: bool,
}

/// A text message on the file channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A file starts.
    Header(FileHeader),
    /// A file was received.
    Ack(FileAck),
}

/// Errors of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A text message that is not a header or an ack.
    #[error("unexpected message on the file channel: {0}")]
    BadControl(String),
    /// Binary data with no file announced.
    #[error("file data without a header")]
    NoHeader,
    /// More bytes than the header announced.
    #[error("received more than the announced {0} bytes")]
    TooLong(u64),
    /// The digest differs from the header's.
    #[error("checksum mismatch: header says {expected}, data hashes to {actual}")]
    ChecksumMismatch {
        /// From the header.
        expected: String,
        /// Computed.
        actual: String,
    },
}

/// Parses a text message of the file channel.
pub fn parse_control(text: &str) -> Result<Control, TransferError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| TransferError::BadControl(e.to_string()))?;
    match v.get("kind").and_then(|k| k.as_str()) {
        Some("file") => serde_json::from_value(v)
            .map(Control::Header)
            .map_err(|e| TransferError::BadControl(e.to_string())),
        Some("file-ack") => serde_json::from_value(v)
            .map(Control::Ack)
            .map_err(|e| TransferError::BadControl(e.to_string())),
        _ => Err(TransferError::BadControl(text.chars().take(80).collect())),
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Incremental SHA-256, finished as lower-case hex.
#[derive(Debug, Default, Clone)]
pub struct Checksum(Sha256);

impl Checksum {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest.
    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Builds the header for `data`.
pub fn header_for(name: &str, data: &[u8]) -> FileHeader {
    FileHeader {
        kind: "file".into(),
        name: name.into(),
        size: data.len() as u64,
        mime: String::new(),
        sha256: Some(sha256_hex(data)),
    }
}

/// Receives one file: feed it the chunks (the caller stores them), then [`Receiving::finish`].
#[derive(Debug)]
pub struct Receiving {
    header: FileHeader,
    hasher: Checksum,
    received: u64,
}

/// The outcome of a completed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The header.
    pub header: FileHeader,
    /// Their SHA-256, lower-case hex.
    pub sha256: String,
    /// The header carried a checksum and it matched (false: the header had none).
    pub verified: bool,
}

impl Receiving {
    /// Starts receiving the file `header` announces.
    pub fn new(header: FileHeader) -> Self {
        Receiving {
            header,
            hasher: Checksum::default(),
            received: 0,
        }
    }

    /// The header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Bytes so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Adds a chunk; refuses bytes beyond the announced size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TransferError> {
        if self.received() + chunk.len() as u64 > self.header.size {
            return Err(TransferError::TooLong(self.header.size));
        }
        self.hasher.update(chunk);
        self.received += chunk.len() as u64;
        Ok(())
    }

    /// All announced bytes arrived.
    pub fn is_complete(&self) -> bool {
        self.received() == self.header.size
    }

    /// Ends the file: the ack to send back and the result (an error when the checksum differs;
    /// the ack then says `ok: false`).
    pub fn finish(self) -> (FileAck, Result<Received, TransferError>) {
        let actual = self.hasher.hex();
        let complete = self.received == self.header.size;
        let checksum = match &self.header.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&actual) => {
                Err(TransferError::ChecksumMismatch {
                    expected: expected.clone(),
                    actual: actual.clone(),
                })
            }
            Some(_) => Ok(true),
            None => Ok(false),
        };
        let ack = FileAck {
            kind: "file-ack".into(),
            name: self.header.name.clone(),
            size: self.received,
            sha256: actual.clone(),
            ok: complete && checksum.is_ok(),
        };
        let result = checksum.map(|verified| Received {
            header: self.header,
            sha256: actual,
            verified,
        });
        (ack, result)
    }
}

/// A file name safe to create in the current directory: the last path component of `name`,
/// without control characters, never empty, `.` or `..`.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    match clean.as_str() {
        "" | "." | ".." => "received.bin".into(),
        _ => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_verifies() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let header = header_for("letters.txt", &data);
        let text = serde_json::to_string(&header).unwrap();
        let Control::Header(h) = parse_control(&text).unwrap() else {
            panic!("not a header")
        };
        let mut r = Receiving::new(h);
        for chunk in data.chunks(FILE_CHUNK) {
            assert!(!r.is_complete());
            r.push(chunk).unwrap();
        }
        assert!(r.is_complete());
        assert_eq!(r.received(), data.len() as u64);
        let (ack, got) = r.finish();
        let got = got.unwrap();
        assert!(ack.ok && got.verified);
        assert_eq!(got.header.size, data.len() as u64);
        assert_eq!(ack.sha256, sha256_hex(&data));
        let ack_text = serde_json::to_string(&ack).unwrap();
        assert_eq!(parse_control(&ack_text).unwrap(), Control::Ack(ack));
    }

    #[test]
    fn a_corrupted_file_is_refused() {
        let data = vec![7u8; 1000];
        let mut r = Receiving::new(header_for("x", &data));
        let mut bad = data.clone();
        bad[500] ^= 1;
        r.push(&bad).unwrap();
        let (ack, got) = r.finish();
        assert!(!ack.ok);
        assert!(matches!(got, Err(TransferError::ChecksumMismatch { .. })));
    }

    #[test]
    fn bytes_beyond_the_size_are_refused() {
        let mut r = Receiving::new(header_for("x", &[1, 2, 3]));
        assert_eq!(r.push(&[1, 2, 3, 4]), Err(TransferError::TooLong(3)));
    }

    #[test]
    fn floe_js_headers_without_checksum_are_accepted_unverified() {
        let Control::Header(h) =
            parse_control(r#"{"kind":"file","name":"a.png","size":2,"type":"image/png"}"#).unwrap()
        else {
            panic!()
        };
        let mut r = Receiving::new(h);
        r.push(&[1, 2]).unwrap();
        let (ack, got) = r.finish();
        assert!(ack.ok);
        assert!(!got.unwrap().verified);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("C:\\x\\y.txt"), "y.txt");
        assert_eq!(safe_file_name(".."), "received.bin");
        assert_eq!(safe_file_name("a\u{0}b"), "ab");
        assert_eq!(safe_file_name(""), "received.bin");
    }

    #[test]
    fn garbage_control_is_an_error() {
        assert!(parse_control("not json").is_err());
        assert!(parse_control(r#"{"kind":"other"}"#).is_err());
        assert!(parse_control(r#"{"kind":"file","name":1}"#).is_err());
    }
}
