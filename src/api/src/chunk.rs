//! Command output in JSON. Output is bytes; JSON strings are text. A chunk carries `data`
//! (UTF-8 text) when its bytes are text and `data_base64` when they are not; the encoder holds
//! back the incomplete tail of a multi-byte character until its next bytes arrive, so text
//! split across reads stays text. Concatenating the decoded chunks gives the bytes exactly.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Some bytes of one output stream.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Chunk {
    /// The bytes, when they are UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The bytes, base64 (standard alphabet, padded), when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

/// A chunk whose `data_base64` is not base64.
#[derive(Debug, thiserror::Error)]
#[error("data_base64 is not base64: {0}")]
pub struct BadChunk(base64::DecodeError);

impl Chunk {
    pub fn text(s: impl Into<String>) -> Self {
        Self {
            data: Some(s.into()),
            data_base64: None,
        }
    }

    pub fn binary(b: &[u8]) -> Self {
        Self {
            data: None,
            data_base64: Some(STANDARD.encode(b)),
        }
    }

    /// The bytes this chunk carries.
    pub fn bytes(&self) -> Result<Vec<u8>, BadChunk> {
        let mut out = self
            .data
            .clone()
            .map(String::into_bytes)
            .unwrap_or_default();
        if let Some(b) = &self.data_base64 {
            out.extend(STANDARD.decode(b).map_err(BadChunk)?);
        }
        Ok(out)
    }
}

/// Turns a stream's reads into chunks (one encoder per stream).
#[derive(Debug, Default)]
pub struct Encoder {
    /// The start of a character whose remaining bytes have not arrived (at most 3 bytes).
    held: Vec<u8>,
}

impl Encoder {
    /// The chunks for the next `bytes` of the stream (none, one or two: text, then what is
    /// not text).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Chunk> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut rest = &buf[..];
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push(Chunk::text(text));
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    if !good.is_empty() {
                        out.push(Chunk::text(String::from_utf8_lossy(good).into_owned()));
                    }
                    match e.error_len() {
                        // The end cut a character: keep its start for the next read.
                        None => {
                            self.held = bad.to_vec();
                            break;
                        }
                        // Bytes that are not text: as they are, in base64.
                        Some(n) => {
                            out.push(Chunk::binary(&bad[..n]));
                            rest = &bad[n..];
                        }
                    }
                }
            }
        }
        merge_binary(out)
    }

    /// What is held back at the end of the stream (an incomplete character: not text).
    pub fn finish(&mut self) -> Option<Chunk> {
        let held = std::mem::take(&mut self.held);
        (!held.is_empty()).then(|| Chunk::binary(&held))
    }
}

/// Adjacent binary chunks as one (a run of invalid bytes is otherwise one chunk per byte).
fn merge_binary(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::with_capacity(chunks.len());
    let mut pending: Vec<u8> = Vec::new();
    for c in chunks {
        match (&c.data, &c.data_base64) {
            (None, Some(b)) => {
                if let Ok(bytes) = STANDARD.decode(b) {
                    pending.extend(bytes);
                }
            }
            _ => {
                if !pending.is_empty() {
                    out.push(Chunk::binary(&std::mem::take(&mut pending)));
                }
                out.push(c);
            }
        }
    }
    if !pending.is_empty() {
        out.push(Chunk::binary(&pending));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[Chunk]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.bytes().unwrap()).collect()
    }

    #[test]
    fn text_split_inside_a_character_stays_text() {
        let mut e = Encoder::default();
        let s = "héllo wörld €";
        let bytes = s.as_bytes();
        let mut chunks = Vec::new();
        for b in bytes {
            chunks.extend(e.push(std::slice::from_ref(b)));
        }
        assert!(e.finish().is_none());
        assert!(chunks.iter().all(|c| c.data.is_some()), "{chunks:?}");
        assert_eq!(decode(&chunks), bytes);
    }

    #[test]
    fn bytes_that_are_not_text_travel_as_base64() {
        let mut e = Encoder::default();
        let chunks = e.push(b"ok\xff\xfe\x00end");
        assert_eq!(
            chunks,
            vec![
                Chunk::text("ok"),
                Chunk::binary(b"\xff\xfe"),
                Chunk::text("\0end")
            ]
        );
        // A stream that ends inside a character: its start is delivered, as bytes.
        let mut e = Encoder::default();
        let mut chunks = e.push(b"a\xe2\x82");
        chunks.extend(e.finish());
        assert_eq!(decode(&chunks), b"a\xe2\x82");
    }

    proptest! {
        /// Whatever the bytes and however they are split, the chunks give them back exactly.
        #[test]
        fn chunks_give_back_the_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(0usize..300, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut e = Encoder::default();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                chunks.extend(e.push(&bytes[at..c]));
                at = c;
            }
            chunks.extend(e.finish());
            prop_assert_eq!(decode(&chunks), bytes);
        }
    }
}
